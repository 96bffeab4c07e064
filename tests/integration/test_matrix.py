"""The client matrix against a real Apache 2.4: the original ``webkit-only`` block and the applied change.

What this module proves:

* the full matrix (every client family, with and without a certificate, TLS
  1.2 and TLS 1.3, with PHA and without) for ``webkit-only`` and for the
  applied change, row by row, including the IE11 case that motivated the
  change (asked under ``webkit-only`` -- it refuses, AH02261 -- and not asked
  after apply) and the no-PHA 403 case (AH10158);
* the behavioural profiles tell the truth: real curl, python-requests,
  OpenJDK 17 ``java.net.http.HttpClient`` and Go 1.19 ``net/http`` get the
  outcome their profile row predicts, for both vhosts, both TLS versions,
  with and without a certificate;
* the live gate (`livecheck`) passes on the applied vhost and fails on the original alone;
* the TLS 1.3 mitigation (``SSLProtocol -all +TLSv1.2`` in the policy
  snippet): TLS 1.3 rows are skipped, Java works, only Go remains a known effect -- and it
  takes effect for a name-based vhost whether it is the default for its
  address or not (measured both ways).

Real Java and Go come from Debian (default-jdk-headless, golang-go, listed in
the Makefile's APT_TEST): when missing they are installed with
scripts/apt-ensure, and if that is impossible the test fails naming the
package -- it never skips.
"""

import os
import shutil
import socket
import ssl
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify import results as R
from dataone_cn_sslverify import tlsobserve as T
from dataone_cn_sslverify import records
from dataone_cn_sslverify import sslcompat
from harness import ApacheInstance, Pki
from harness.changes import patch_applied, set_tls12_only
from harness.instance import REPO_ROOT, SAFE_PATH

pytestmark = pytest.mark.integration

VERIFY = ("X-Test-Client-Verify",)
PATH = "/cn/"

# ---------------------------------------------------------------- expected matrix (measured; see README)

ASK12 = (T.HOW_RENEGOTIATION, 200)
REFUSE12 = (T.HOW_RENEGOTIATION_REFUSED, None)
PHA13 = (T.HOW_POST_HANDSHAKE, 200)
NOPHA13 = (None, 403)
NOT = (None, 200)

API = {
    "api-curl": (ASK12, PHA13),
    "api-python-requests": (ASK12, PHA13),
    "api-r-httr": (ASK12, PHA13),
    "api-d1-python": (ASK12, PHA13),
    "api-java-httpclient": (ASK12, NOPHA13),
    "api-d1-java": (ASK12, NOPHA13),
    "api-python-ssl": (ASK12, NOPHA13),
    "api-go": (REFUSE12, NOPHA13),
}


def expected(variant: str, p: C.Profile) -> Tuple[Optional[str], Optional[int]]:
    """(how, status) the measured server gives this row."""
    if p.kind == C.API:
        return API[p.client][0 if p.tls == "1.2" else 1]
    if variant == "applied":
        return NOT  # the target pattern exempts every browser family, whatever the TLS stack
    # webkit-only: non-WebKit browsers (IE11, the MetacatUI XHR from IE11, Firefox) are asked
    if p.client in ("browser-ie11-win7", "browser-metacatui-xhr"):
        return REFUSE12
    if p.client == "browser-firefox":
        if p.tls == "1.2":
            return ASK12
        return PHA13 if p.pha else NOPHA13
    return NOT


def expected_verified(how: Optional[str], status: Optional[int], cert: bool) -> str:
    if how in (T.HOW_RENEGOTIATION, T.HOW_POST_HANDSHAKE) and status == 200:
        return "SUCCESS" if cert else "NONE"
    return "NONE"  # not asked (the header echoes NONE), refused (inferred: none sent), 403 (header)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Dict[str, ApacheInstance]]:
    made: Dict[str, ApacheInstance] = {}
    try:
        for name in ("webkit-only", "applied", "mitigated"):
            inst = ApacheInstance(tmp_path_factory.mktemp("matrix-" + name), "webkit-only", pki=pki)
            made[name] = inst
            if name != "webkit-only":
                patch_applied(inst)
            if name == "mitigated":
                set_tls12_only(inst)
            assert inst.configtest().ok, inst.configtest().output
            inst.start()
        yield made
    finally:
        for inst in made.values():
            inst.cleanup()
    assert not any(i.processes() for i in made.values())


def run_matrix(inst: ApacheInstance, profiles=None, backend: str = "python") -> List[R.ProbeResult]:
    return P.probe_matrix("127.0.0.1", inst.https_port, inst.server_name, PATH, profiles,
                          client_cert=str(inst.pki.client_cert), client_key=str(inst.pki.client_key),
                          backend=backend, verify_headers=VERIFY, timeout=10)


@pytest.fixture(scope="module")
def matrices(servers: Dict[str, ApacheInstance]) -> Dict[str, List[R.ProbeResult]]:
    return {name: run_matrix(inst) for name, inst in servers.items()}


def table(results: List[R.ProbeResult]) -> str:
    return "\n" + R.format_table(results)


# ---------------------------------------------------------------- the matrix, row by row


@pytest.mark.parametrize("variant", ["webkit-only", "applied"])
def test_matrix_rows(matrices, variant):
    results = matrices[variant]
    assert [r.name for r in results] == [p.name for p in C.matrix_profiles()]
    assert not any(r.skipped for r in results), table(results)  # both TLS versions offered
    for r in results:
        how, status = expected(variant, r.profile)
        want = (r.profile.tls, how is not None, how, status, expected_verified(how, status, r.profile.cert))
        got = (r.tls, r.cert_requested, r.how, r.status, r.verified)
        assert got == want, f"{r.name}: got {got}, want {want}" + table([r])
        if r.profile.cert and how in (T.HOW_RENEGOTIATION, T.HOW_POST_HANDSHAKE):
            assert r.cert_sent and r.outcome == "authenticated", table([r])


def test_ie11_case_asked_before_not_after(servers, matrices):
    """The incident: IE11 (and MetacatUI's XHR from it) is asked under webkit-only, refuses, gets nothing."""
    before = {r.name: r for r in matrices["webkit-only"]}
    after = {r.name: r for r in matrices["applied"]}
    for name in ("browser-ie11-win7/1.2/nocert", "browser-metacatui-xhr/1.2/nocert"):
        b, a = before[name], after[name]
        assert b.cert_requested and b.how == T.HOW_RENEGOTIATION_REFUSED and b.status is None, table([b])
        assert "AH02261" in (b.diagnosis or "")
        assert not a.cert_requested and a.status == 200 and a.works, table([a])
    inst = servers["webkit-only"]
    mark = inst.error_log_mark()
    r = run_matrix(inst, [C.get_profile("browser-ie11-win7/1.2/nocert")])[0]
    assert r.how == T.HOW_RENEGOTIATION_REFUSED
    assert "AH02261: Re-negotiation handshake failed" in inst.error_log_since(mark)


@pytest.mark.parametrize("variant", ["webkit-only", "applied"])
def test_no_pha_clients_get_403_under_tls13(servers, matrices, variant):
    by = {r.name: r for r in matrices[variant]}
    for client in ("api-java-httpclient", "api-d1-java", "api-go", "api-python-ssl"):
        for cert in ("nocert", "cert"):
            r = by[f"{client}/1.3/{cert}"]
            assert r.tls == "1.3" and r.status == 403 and not r.cert_requested and not r.cert_sent, table([r])
            assert "AH10158" in (r.diagnosis or "")
    # the same families under TLS 1.2 (those that accept renegotiation) are asked and authenticated
    assert by["api-java-httpclient/1.2/cert"].outcome == "authenticated"
    assert by["api-python-requests/1.3/cert"].outcome == "authenticated"
    inst = servers[variant]
    mark = inst.error_log_mark()
    run_matrix(inst, [C.get_profile("api-java-httpclient/1.3/nocert")])
    assert "AH10158: cannot perform post-handshake authentication" in inst.error_log_since(mark)


def live_gate(inst: ApacheInstance, mode: str = "policy"):
    from dataone_cn_sslverify import livecheck
    return livecheck.run(mode, "127.0.0.1", inst.https_port, inst.server_name,
                         required=["/metacat/servlet/replication"],
                         trusted=(str(inst.pki.client_cert), str(inst.pki.client_key)), verify_headers=VERIFY)


def test_gate(servers):
    """The live gate on the real server: the promise holds after the change, not before; effects confirmed."""
    v = live_gate(servers["applied"]).verdict
    assert v.ok, v.problems
    assert sorted((e.client, e.tls, e.confirmed) for e in v.effects) == [
        ("api-d1-java", "1.3", True), ("api-go", "1.2", True), ("api-go", "1.3", True),
        ("api-java-httpclient", "1.3", True), ("api-python-ssl", "1.3", True)]
    v = live_gate(servers["webkit-only"]).verdict
    assert not v.ok and v.summary.startswith("browsers asked (browser-ie11-win7/1.2/nocert/reneg, ")
    assert live_gate(servers["webkit-only"], "original").verdict.ok


@pytest.mark.parametrize("variant", ["webkit-only", "applied"])
def test_openssl_backend_agrees(servers, matrices, variant):
    rows = C.matrix_profiles(certs=(False,))
    got = run_matrix(servers[variant], rows, backend="openssl")
    want = {r.name: r for r in matrices[variant]}
    for r in got:
        w = want[r.name]
        assert (r.tls, r.cert_requested, r.how, r.status, r.verified) == (w.tls, w.cert_requested, w.how, w.status,
                                                                         w.verified), table([r, w])


# ---------------------------------------------------------------- the mitigation


def test_mitigation_matrix(servers, matrices):
    results = matrices["mitigated"]
    by = {r.name: r for r in results}
    skipped = sorted(r.name for r in results if r.skipped)
    assert skipped == sorted(p.name for p in C.matrix_profiles() if p.tls == "1.3"), table(results)
    assert all("does not offer TLS 1.3" in by[n].skipped for n in skipped)
    for r in results:
        if r.skipped:
            continue
        how, status = expected("applied", r.profile)
        assert (r.how, r.status) == (how, status), table([r])
    # what clients negotiate now: Java and the DataONE Java client authenticate; Go still refuses renegotiation
    assert by["api-java-httpclient/1.2/cert"].outcome == "authenticated"
    assert by["api-d1-java/1.2/cert"].outcome == "authenticated"
    assert by["api-go/1.2/cert"].outcome == "failed"
    # the live gate: only Go under TLS 1.2 remains a known effect (it refuses renegotiation)
    v = live_gate(servers["mitigated"]).verdict
    assert v.ok, v.problems
    assert [(e.client, e.tls) for e in v.effects] == [("api-go", "1.2")]


OTHER_VHOST = """\
<VirtualHost *:{port}>
    ServerName other.example.test
    DocumentRoot {docroot}
    SSLEngine on
    SSLCertificateFile {certdir}/server.crt
    SSLCertificateKeyFile {certdir}/server.key
</VirtualHost>
"""


def raw_get(port: int, sni: Optional[str], host: str, user_agent: str) -> Tuple[Optional[str], Optional[int]]:
    """GET /cn/ with SNI and Host chosen separately, as a client without PHA. (TLS version, status)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sslcompat.set_post_handshake_auth(ctx, False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=sni) as t:
            t.sendall(f"GET /cn/ HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
            return t.version(), T.parse_http_response(data)[0]


@pytest.mark.parametrize("order", ["cn-first", "other-first"])
def test_mitigation_per_vhost(tmp_path_factory, pki, order):
    """`SSLProtocol -all +TLSv1.2` in the CN vhost, with a second name-based vhost on the same address:port."""
    inst = ApacheInstance(tmp_path_factory.mktemp("order-" + order), "webkit-only", pki=pki)
    try:
        patch_applied(inst)
        set_tls12_only(inst)
        name = "000-other.conf" if order == "other-first" else "zzz-other.conf"
        (inst.confdir / "sites-enabled" / name).write_text(
            OTHER_VHOST.format(port=inst.https_port, docroot=inst.docroot, certdir=pki.dir))
        inst.start()
        dump = inst.apache2ctl("-S").output
        default = "other.example.test" if order == "other-first" else "cn.dataone.test"
        assert f"default server {default} " in dump, dump
        port = inst.https_port
        hs = {sni: {v: P.handshake("127.0.0.1", port, sni, tls=v) for v in C.TLS_VERSIONS}
              for sni in ("cn.dataone.test", "other.example.test", None)}
        # with the CN name in SNI: TLS 1.2 only, whichever vhost is the default
        assert not hs["cn.dataone.test"]["1.3"].ok and "PROTOCOL_VERSION" in (hs["cn.dataone.test"]["1.3"].error or "")
        assert hs["cn.dataone.test"]["1.2"].ok
        # the other vhost keeps TLS 1.3
        assert hs["other.example.test"]["1.3"].ok
        # no SNI: the default vhost's protocols
        assert hs[None]["1.3"].ok == (order == "other-first")
        java = C.get_client("api-java-httpclient").user_agent
        host = f"cn.dataone.test:{port}"
        assert raw_get(port, "cn.dataone.test", host, java) == ("TLSv1.2", 200)
        if order == "cn-first":
            assert raw_get(port, None, host, java) == ("TLSv1.2", 200)
        else:  # without SNI a client lands on the other vhost and cannot reach the CN name at all
            assert raw_get(port, None, host, java) == ("TLSv1.3", 421)
        # without the setting the same client gets TLS 1.3 and 403 (the hazard), again whatever the order
        set_tls12_only(inst, on=False)
        assert inst.graceful().ok
        assert raw_get(port, "cn.dataone.test", host, java) == ("TLSv1.3", 403)
    finally:
        inst.cleanup()


# ---------------------------------------------------------------- real clients agree with their profiles

JAVA_SRC = r"""
import java.io.*;
import java.net.URI;
import java.net.http.*;
import java.security.KeyStore;
import java.security.cert.*;
import java.time.Duration;
import javax.net.ssl.*;

/** stdin: id TAB url TAB user-agent TAB tls(1.2|1.3|auto) TAB pkcs12-or-dash; stdout: id TAB status TAB tls TAB verify TAB error */
public class RealJava {
    public static void main(String[] args) throws Exception {
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (InputStream in = new FileInputStream(args[0])) {
            int i = 0;
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) trust.setCertificateEntry("ca" + (i++), c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        BufferedReader r = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = r.readLine()) != null) {
            if (line.isEmpty()) continue;
            String[] f = line.split("\t", -1);
            String out;
            try {
                KeyManager[] km = null;
                if (!f[4].equals("-")) {
                    KeyStore ks = KeyStore.getInstance("PKCS12");
                    try (InputStream in = new FileInputStream(f[4])) { ks.load(in, "changeit".toCharArray()); }
                    KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                    kmf.init(ks, "changeit".toCharArray());
                    km = kmf.getKeyManagers();
                }
                SSLContext ctx = SSLContext.getInstance("TLS");
                ctx.init(km, tmf.getTrustManagers(), null);
                SSLParameters p = ctx.getDefaultSSLParameters();
                if (!f[3].equals("auto")) p.setProtocols(new String[] {"TLSv" + f[3]});
                HttpClient c = HttpClient.newBuilder().sslContext(ctx).sslParameters(p)
                        .version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
                HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(f[1])).timeout(Duration.ofSeconds(10));
                if (!f[2].isEmpty()) b.header("User-Agent", f[2]);
                HttpResponse<String> resp = c.send(b.build(), HttpResponse.BodyHandlers.ofString());
                out = resp.statusCode() + "\t" + resp.sslSession().map(s -> s.getProtocol()).orElse("-") + "\t"
                        + resp.headers().firstValue("x-test-client-verify").orElse("-") + "\t";
            } catch (Exception e) {
                Throwable t = e;
                while (t.getCause() != null) t = t.getCause();
                out = "-\t-\t-\t" + t.toString().replace('\t', ' ').replace('\n', ' ');
            }
            System.out.println(f[0] + "\t" + out);
            System.out.flush();
        }
    }
}
"""

GO_SRC = r"""
package main

// stdin: id TAB url TAB user-agent TAB tls(1.2|1.3|auto) TAB cert-or-dash TAB key-or-dash TAB dial-address
// stdout: id TAB status TAB tls TAB verify TAB error. Default http.Transport TLS settings otherwise
// (Renegotiation: RenegotiateNever, no post-handshake auth).
import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	pool.AppendCertsFromPEM(ca)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) < 7 {
			continue
		}
		cfg := &tls.Config{RootCAs: pool}
		if f[3] == "1.2" {
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		} else if f[3] == "1.3" {
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
		}
		if f[4] != "-" {
			kp, err := tls.LoadX509KeyPair(f[4], f[5])
			if err != nil {
				panic(err)
			}
			cfg.Certificates = []tls.Certificate{kp}
		}
		addr := f[6]
		tr := &http.Transport{TLSClientConfig: cfg, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		tr.Dial = func(network, _ string) (net.Conn, error) { return net.DialTimeout(network, addr, 10*time.Second) }
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		req, _ := http.NewRequest("GET", f[1], nil)
		if f[2] != "" {
			req.Header.Set("User-Agent", f[2])
		}
		resp, err := c.Do(req)
		if err != nil {
			fmt.Printf("%s\t-\t-\t-\t%s\n", f[0], strings.ReplaceAll(err.Error(), "\t", " "))
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		v := "-"
		if resp.TLS != nil && resp.TLS.Version == tls.VersionTLS13 {
			v = "TLSv1.3"
		} else if resp.TLS != nil && resp.TLS.Version == tls.VersionTLS12 {
			v = "TLSv1.2"
		}
		fmt.Printf("%s\t%d\t%s\t%s\t\n", f[0], resp.StatusCode, v, resp.Header.Get("X-Test-Client-Verify"))
	}
}
"""


def ensure_tool(binary: str, package: str) -> str:
    """The path of ``binary``; installs Debian's ``package`` with scripts/apt-ensure if missing. Never skips."""
    path = shutil.which(binary, path=SAFE_PATH)
    if path is None and os.geteuid() == 0:
        proc = subprocess.run(["sh", str(REPO_ROOT / "scripts" / "apt-ensure"), package], env=dict(os.environ, PATH=SAFE_PATH),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
        path = shutil.which(binary, path=SAFE_PATH)
        if path is None:
            pytest.fail(f"{binary} missing and `scripts/apt-ensure {package}` failed:\n"
                        + proc.stdout.decode(errors="replace")[-2000:], pytrace=False)
    if path is None:
        pytest.fail(f"{binary} not found: install the Debian package {package} (`make test` does)", pytrace=False)
    return path


@records.dataclass
class Real:
    status: Optional[int]
    tls: Optional[str]
    verify: Optional[str]
    error: str

    @property
    def outcome(self) -> str:
        if self.status is None:
            return "failed"
        if self.status in (403, 421) or self.status >= 500:
            return "refused"
        return "authenticated" if self.verify == "SUCCESS" else "ok"


def parse_lines(text: str) -> Dict[str, Real]:
    out = {}
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) >= 5:
            out[f[0]] = Real(int(f[1]) if f[1].isdigit() else None, None if f[2] == "-" else f[2],
                             None if f[3] in ("-", "") else f[3], f[4])
    return out


@pytest.fixture(scope="module")
def real_clients(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Dict[str, object]:
    """Build the Java and Go clients once (javac ~1 s, go build ~2 s), and a PKCS#12 for Java."""
    d = tmp_path_factory.mktemp("real-clients")
    javac, java = ensure_tool("javac", "default-jdk-headless"), ensure_tool("java", "default-jdk-headless")
    go = ensure_tool("go", "golang-go")
    (d / "RealJava.java").write_text(JAVA_SRC)
    subprocess.run([javac, "-d", str(d), str(d / "RealJava.java")], check=True, timeout=300)
    (d / "go").mkdir()
    (d / "go" / "main.go").write_text(GO_SRC)
    (d / "go" / "go.mod").write_text("module realgo\n\ngo 1.19\n")
    env = dict(os.environ, PATH=SAFE_PATH, GOCACHE=str(d / "gocache"), GOPATH=str(d / "gopath"), GOFLAGS="-mod=mod",
               HOME=str(d))
    subprocess.run([go, "build", "-o", str(d / "realgo"), "."], cwd=str(d / "go"), env=env, check=True, timeout=600)
    p12 = d / "client.p12"
    subprocess.run(["openssl", "pkcs12", "-export", "-in", str(pki.client_cert), "-inkey", str(pki.client_key),
                    "-out", str(p12), "-passout", "pass:changeit"], check=True, timeout=60)
    hosts = d / "hosts"
    hosts.write_text(f"127.0.0.1 {pki.server_name}\n")
    return {"java": java, "classes": str(d), "go": str(d / "realgo"), "p12": str(p12), "hosts": str(hosts)}


def run_java(rc: Dict[str, object], inst: ApacheInstance, cases: List[Tuple[str, str, str, bool]]) -> Dict[str, Real]:
    """cases: (id, user-agent, tls, cert)."""
    url = f"https://{inst.server_name}:{inst.https_port}{PATH}"
    lines = [f"{i}\t{url}\t{ua}\t{tls}\t{rc['p12'] if cert else '-'}" for i, ua, tls, cert in cases]
    proc = subprocess.run([str(rc["java"]), f"-Djdk.net.hosts.file={rc['hosts']}", "-cp", str(rc["classes"]), "RealJava",
                           str(inst.pki.ca_cert)], input="\n".join(lines) + "\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120)
    got = parse_lines(proc.stdout)
    assert len(got) == len(cases), proc.stdout + proc.stderr
    return got


def run_go(rc: Dict[str, object], inst: ApacheInstance, cases: List[Tuple[str, str, str, bool]]) -> Dict[str, Real]:
    url = f"https://{inst.server_name}:{inst.https_port}{PATH}"
    pki = inst.pki
    lines = [f"{i}\t{url}\t{ua}\t{tls}\t" + (f"{pki.client_cert}\t{pki.client_key}" if cert else "-\t-")
             + f"\t127.0.0.1:{inst.https_port}" for i, ua, tls, cert in cases]
    proc = subprocess.run([str(rc["go"]), str(pki.ca_cert)], input="\n".join(lines) + "\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    got = parse_lines(proc.stdout)
    assert len(got) == len(cases), proc.stdout + proc.stderr
    return got


def run_requests(inst: ApacheInstance, ua: str, tls: str, cert: bool, monkeypatch: pytest.MonkeyPatch) -> Real:
    """The real python-requests (Debian's python3-requests / urllib3): its own SSL context, pinned to ``tls``."""
    import requests  # noqa: PLC0415 - python3-requests is in APT_TEST
    from requests.adapters import HTTPAdapter
    from urllib3.util.ssl_ import create_urllib3_context

    class Pinned(HTTPAdapter):
        def init_poolmanager(self, *a, **kw):  # type: ignore[no-untyped-def]
            ctx = create_urllib3_context()  # urllib3 turns post-handshake auth on here
            sslcompat.set_range(ctx, minimum=sslcompat.TLSv1_2 if tls == "1.2" else sslcompat.TLSv1_3, maximum=sslcompat.TLSv1_2 if tls == "1.2" else sslcompat.TLSv1_3)
            ctx.load_verify_locations(cafile=str(inst.pki.ca_cert))
            kw["ssl_context"] = ctx
            return super().init_poolmanager(*a, **kw)

    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, *a, **kw):  # type: ignore[no-untyped-def]
        return real_getaddrinfo("127.0.0.1" if host == inst.server_name else host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    s = requests.Session()
    s.mount("https://", Pinned())
    try:
        r = s.get(f"https://{inst.server_name}:{inst.https_port}{PATH}", headers={"User-Agent": ua},
                  cert=(str(inst.pki.client_cert), str(inst.pki.client_key)) if cert else None,
                  verify=str(inst.pki.ca_cert), timeout=10)
        return Real(r.status_code, tls, r.headers.get("X-Test-Client-Verify"), "")
    except requests.RequestException as exc:
        return Real(None, None, None, str(exc))
    finally:
        monkeypatch.undo()
        s.close()


@pytest.mark.parametrize("variant", ["webkit-only", "applied"])
def test_real_clients_agree_with_their_profiles(servers, matrices, real_clients, variant, monkeypatch):
    inst = servers[variant]
    by = {r.name: r for r in matrices[variant]}
    java_ua = C.get_client("api-java-httpclient").user_agent
    d1_java_ua = C.get_client("api-d1-java").user_agent
    go_ua = C.get_client("api-go").user_agent
    cases = [(tls, cert) for tls in C.TLS_VERSIONS for cert in (False, True)]

    def row(client: str, tls: str, cert: bool) -> R.ProbeResult:
        return by[f"{client}/{tls}/{'cert' if cert else 'nocert'}"]

    t0 = time.monotonic()
    java = run_java(real_clients, inst, [(f"{c}-{t}-{k}", ua, t, k) for c, ua in (("java", java_ua), ("d1", d1_java_ua))
                                         for t, k in cases])
    go = run_go(real_clients, inst, [(f"go-{t}-{k}", go_ua, t, k) for t, k in cases])
    seen: List[Tuple[str, str, str, str]] = []
    for tls, cert in cases:
        checks = [
            ("api-java-httpclient", java[f"java-{tls}-{cert}"]),
            ("api-d1-java", java[f"d1-{tls}-{cert}"]),
            ("api-go", go[f"go-{tls}-{cert}"]),
            ("api-python-requests", run_requests(inst, C.get_client("api-python-requests").user_agent, tls, cert, monkeypatch)),
            ("api-d1-python", run_requests(inst, C.get_client("api-d1-python").user_agent, tls, cert, monkeypatch)),
        ]
        c = inst.request(PATH, user_agent=C.get_client("api-curl").user_agent, cert="trusted" if cert else False, tls=tls)
        checks.append(("api-curl", Real(c.status or None, c.tls_version, c.client_verify, c.stderr[-200:])))
        for client, real in checks:
            r = row(client, tls, cert)
            seen.append((client, tls, str(cert), real.outcome))
            assert real.outcome == r.outcome, f"{client} TLS {tls} cert={cert}: real {real}, profile" + table([r])
    # and the outcomes are the measured ones (README): Java 403 under 1.3, Go fails under 1.2 (no renegotiation)
    assert ("api-java-httpclient", "1.3", "True", "refused") in seen
    assert ("api-java-httpclient", "1.2", "True", "authenticated") in seen
    assert ("api-go", "1.2", "False", "failed") in seen and ("api-go", "1.3", "True", "refused") in seen
    assert "no renegotiation" in go["go-1.2-False"].error
    assert ("api-python-requests", "1.3", "True", "authenticated") in seen
    assert time.monotonic() - t0 < 60


def test_real_java_after_the_mitigation_negotiates_tls12_and_authenticates(servers, real_clients):
    got = run_java(real_clients, servers["mitigated"], [("auto", C.get_client("api-d1-java").user_agent, "auto", True)])
    assert (got["auto"].status, got["auto"].tls, got["auto"].verify) == (200, "TLSv1.2", "SUCCESS")
    got = run_java(real_clients, servers["applied"], [("auto", C.get_client("api-d1-java").user_agent, "auto", True)])
    assert (got["auto"].status, got["auto"].tls) == (403, "TLSv1.3")
