"""`dataone-cn-sslverify check` against a real Apache 2.4 (tests/harness), run as an operator runs it.

One instance for the module, changed step by step (each test puts back what
it changed): the original ``webkit-only`` vhost, the applied change, the
TLS 1.2 opt-in, HTTP/2, a missing ``SSLRenegBufferSize``, a broken
configuration, an edited browser pattern. Where ``check`` claims that
something breaks, the test also shows it breaking with a real client.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify import results as R
from dataone_cn_sslverify import tlsobserve as T
from harness import ApacheInstance, Pki
from harness.changes import patch_applied, set_tls12_only

pytestmark = pytest.mark.integration

MAIN = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # Debian's 3.11 under `make test`, 3.6 under `make test-py36`
#: Where Debian's mods-available/http2.conf says `Protocols h2 h2c http/1.1`.
HTTP2_PROTOCOLS_LINE = next(i for i, ln in enumerate(open("/etc/apache2/mods-available/http2.conf"), 1)
                            if ln.strip().startswith("Protocols"))


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ApacheInstance]:
    inst = ApacheInstance(tmp_path_factory.mktemp("check"), "webkit-only", pki=pki)
    try:
        inst.start()
        yield inst
    finally:
        inst.cleanup()
    assert not inst.processes()


def tool(inst: ApacheInstance, *args: str) -> Tuple[int, str, str]:
    env = inst.env()
    env["PYTHONPATH"] = str(MAIN)
    p = subprocess.run([PYTHON, "-m", "dataone_cn_sslverify"] + list(args), env=env, cwd=str(MAIN),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def check(inst: ApacheInstance, *args: str) -> Tuple[int, Dict[str, Any]]:
    code, out, err = tool(inst, "--json", "check", *args)
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"exit {code}, stdout is not JSON:\n{out}\n{err}") from None
    assert doc["exit_code"] == code, doc
    return code, doc


def ids(doc: Dict[str, Any], severity: str) -> List[str]:
    return [h["id"] for h in doc["hazards"] if h["severity"] == severity]


def hazard(doc: Dict[str, Any], hid: str) -> Dict[str, Any]:
    return next(h for h in doc["hazards"] if h["id"] == hid)


def graceful(inst: ApacheInstance) -> None:
    r = inst.graceful()
    assert r.ok, r.output


def probe_row(inst: ApacheInstance, name: str) -> R.ProbeResult:
    return P.probe_matrix("127.0.0.1", inst.https_port, inst.server_name, "/cn/", [C.get_profile(name)],
                          verify_headers=("X-Test-Client-Verify",))[0]


def test_original_webkit_only(cn):
    code, doc = check(cn)
    assert code == 5 and doc["clean"] is False
    assert doc["vhost"]["state"] == "original:webkit-only" and doc["vhost"]["pattern"] == "webkit"
    assert ids(doc, "hazard") == ["tls13-no-pha", "browser-pattern"]
    assert ids(doc, "note") == ["tls12-no-renegotiation"]
    t = hazard(doc, "tls13-no-pha")
    assert "Mozilla Firefox on Linux" in t["clients"] and "Java 11+ java.net.http.HttpClient" in t["clients"]
    assert "measured: a TLS 1.3 handshake with 127.0.0.1:%d (SNI cn.dataone.test) succeeded" % cn.https_port in t["evidence"]
    assert doc["live"]["tls1.3"]["ok"] is True and doc["live"]["default_vhost"] is True
    b = hazard(doc, "browser-pattern")
    assert "Internet Explorer 11 (Windows 7)" in b["clients"] and "Firefox (Linux)" in b["clients"]
    assert not any(c.startswith(("Chrome", "Safari", "Edge")) for c in b["clients"])
    # what check says is what the server does
    assert probe_row(cn, "browser-ie11-win7/1.2/nocert").how == T.HOW_RENEGOTIATION_REFUSED
    assert probe_row(cn, "browser-firefox/1.3/nocert").status == 403
    assert probe_row(cn, "browser-chrome/1.3/nocert").status == 200
    # the human report
    code, out, err = tool(cn, "check")
    assert code == 5 and "HAZARD [browser-pattern]" in out and out.endswith("check: 2 hazards, exit 5\n")


def test_applied_then_the_tls12_opt_in(cn):
    original = cn.vhost_bytes()
    patch_applied(cn)
    graceful(cn)
    code, doc = check(cn)
    assert code == 5 and doc["vhost"]["state"] == "applied"
    assert doc["vhost"]["pattern"] == "(windows|chrome|mozilla|safari|webkit)"
    assert ids(doc, "hazard") == ["tls13-no-pha"]
    t = hazard(doc, "tls13-no-pha")
    assert f"uncomment `SSLProtocol -all +TLSv1.2` in {cn.policy_path}" in t["fix"]
    assert not any(c.startswith(("Mozilla", "Google", "Microsoft", "Safari")) for c in t["clients"])

    set_tls12_only(cn)
    try:
        graceful(cn)
        code, doc = check(cn)
        assert code == 0 and doc["clean"] is True, doc
        assert ids(doc, "hazard") == [] and ids(doc, "note") == ["tls13-disabled", "tls12-no-renegotiation"]
        assert doc["live"]["tls1.3"]["ok"] is False and doc["live"]["tls1.2"]["ok"] is True
        assert str(cn.policy_path) in hazard(doc, "tls13-disabled")["where"]
        code, doc = check(cn, "--no-live")  # the configuration alone says the same
        assert code == 0 and doc["live"] is None and ids(doc, "note")[0] == "tls13-disabled"
        # and a client without PHA now gets in (TLS 1.2 renegotiation)
        assert probe_row(cn, "api-java-httpclient/1.2/nocert").status == 200
        assert probe_row(cn, "api-java-httpclient/1.3/nocert").skipped
        code, out, err = tool(cn, "check")
        assert code == 0 and out.endswith("check: 0 hazards, exit 0\n")
    finally:
        set_tls12_only(cn, on=False)
        graceful(cn)
    assert original != cn.vhost_bytes()  # stays applied for the tests below


def test_http2(cn):
    vhost = cn.vhost_bytes()
    cn.enable_module("http2")
    try:
        graceful(cn)
        code, doc = check(cn)
        assert code == 5 and "http2" in ids(doc, "hazard")
        h = hazard(doc, "http2")
        assert h["where"] == "%s/mods-available/http2.conf:%d" % (cn.confdir, HTTP2_PROTOCOLS_LINE), h
        assert any("the server chose h2" in e for e in h["evidence"])
        # the breakage: the per-directory request on HTTP/2 is refused with HTTP_1_1_REQUIRED (curl retries)
        r = cn.request("/cn/", user_agent="curl/7.88.1", http2=True)
        assert "HTTP_1_1_REQUIRED" in r.stderr and r.http_version == "1.1"
        # the fix it names
        cn.write_vhost(vhost.replace(b"\tSSLEngine on\n", b"\tSSLEngine on\n\tProtocols http/1.1\n", 1))
        graceful(cn)
        code, doc = check(cn)
        assert "http2" not in ids(doc, "hazard")
    finally:
        cn.disable_module("http2")
        cn.write_vhost(vhost)
        graceful(cn)


def test_reneg_buffer(cn):
    vhost = cn.vhost_bytes()
    line = b"\t\tSSLRenegBufferSize 10000000\n"
    assert vhost.count(line) == 1
    body = b"x" * 300_000
    for tls in ("1.2", "1.3"):  # with the buffer, the upload is not refused for its size
        assert cn.request("/cn/", user_agent="curl/7.88.1", tls=tls, data=body).status != 413
    cn.write_vhost(vhost.replace(line, b""))
    try:
        graceful(cn)
        code, doc = check(cn)
        assert code == 5 and "reneg-buffer" in ids(doc, "hazard")
        assert "131072" in hazard(doc, "reneg-buffer")["breaks"]
        for tls in ("1.2", "1.3"):  # measured: renegotiation and post-handshake auth both buffer the body
            assert cn.request("/cn/", user_agent="curl/7.88.1", tls=tls, data=body).status == 413
    finally:
        cn.write_vhost(vhost)
        graceful(cn)


def test_configtest_failing(cn):
    broken = cn.confdir / "conf-enabled" / "zz-broken.conf"
    broken.write_text("ThisIsNotADirective on\n")
    try:
        code, doc = check(cn)
        assert code == 5 and ids(doc, "hazard")[0] == "configtest"
        assert "Invalid command 'ThisIsNotADirective'" in hazard(doc, "configtest")["where"], doc
        assert cn.is_running()  # check never reloads
    finally:
        broken.unlink()


def test_edited_pattern_missing_a_family(cn):
    text = cn.policy_path.read_text()
    cn.policy_path.write_text(text.replace("(windows|chrome|mozilla|safari|webkit)", "(windows|chrome|safari|webkit)"))
    try:
        graceful(cn)  # Apache takes it; `apply` would refuse such a snippet
        code, doc = check(cn)
        b = hazard(doc, "browser-pattern")
        assert code == 5 and b["clients"] == ["Firefox (macOS)", "Firefox (Linux)", "Firefox (Android)"]
        assert "/(windows|chrome|safari|webkit)/" in b["breaks"]
        assert probe_row(cn, "browser-firefox/1.2/nocert").cert_requested
    finally:
        cn.policy_path.write_text(text)
        graceful(cn)


def test_no_cn_vhost(cn, tmp_path):
    other = tmp_path / "plain.conf"
    other.write_text("<VirtualHost *:80>\n\tServerName x\n</VirtualHost>\n")
    code, out, err = tool(cn, "--vhost", str(other), "--json", "check")
    assert code == 4 and json.loads(out)["result"] == "not-found"


def test_probe_command_verdict_and_compare(cn, tmp_path):
    """`probe --json` prints the live gate's rows and verdict; `--compare` exits 5 when the gate fails."""
    vhost = cn.vhost_bytes()
    if b"dataone-cn-sslverify: begin" not in vhost:
        patch_applied(cn)
    graceful(cn)
    try:
        code, out, err = tool(cn, "--json", "probe")
        assert code == 0, err
        doc = json.loads(out)
        v = doc["verdict"]
        assert v["ok"] is True and v["mode"] == "policy" and v["offered"] == ["1.2", "1.3"], v
        assert sorted({e["client"] for e in v["effects"]}) == ["api-d1-java", "api-go", "api-java-httpclient",
                                                                "api-python-ssl"]
        row = next(p for p in doc["profiles"] if p["name"] == "api-java-httpclient/1.3/cert/pha")
        assert row["outcome"] == "authenticated" and row["role"] == "api"  # its User-Agent is asked
        row = next(p for p in doc["profiles"] if p["name"] == "api-java-httpclient/1.3/cert")
        assert row["status"] == 403 and row["role"] == "effect"  # its stack cannot answer: the known effect
        assert {p["path"] for p in doc["profiles"]} == {"/cn/", "/metacat/servlet/replication"}
        saved = tmp_path / "before.json"
        saved.write_text(out)
        code, out, err = tool(cn, "probe", "--compare", str(saved))
        assert code == 0 and "(policy): ok: no browser asked" in err, err
        assert out.splitlines()[0].split()[:4] == ["PROFILE", "TLS", "CERT", "PHA"]
        assert "known effect: Go net/http (default tls.Config) cannot use /cn under TLS 1.2" in err
        # a pattern that also matches python: python clients are no longer asked; the gate says so
        text = cn.policy_path.read_text()
        cn.policy_path.write_text(text.replace("safari|webkit)", "safari|webkit|python)"))
        try:
            graceful(cn)
            code, out, err = tool(cn, "probe", "--compare", str(saved), "--client", "api-python-requests")
            assert code == 5, err
            assert "problem: api-python-requests/1.3/cert (User-Agent 'python-requests/2.28.1') was not asked" in err
            assert "changed since" in err and "api-python-requests/1.3/cert: authenticated -> ok" in err, err
            assert out.count("\nPROFILE") == 1  # the --client rows in a second table
        finally:
            cn.policy_path.write_text(text)
            graceful(cn)
        code, out, err = tool(cn, "probe", "--tls", "1.2", "--kind", "api", "--no-instruments")
        assert code == 0
        second = out.split("\n\n", 1)[1]
        assert all("/1.2/nocert" in ln.split()[0] for ln in second.splitlines()[1:]), out
    finally:
        cn.write_vhost(vhost)
        graceful(cn)
    assert os.path.exists(str(cn.policy_path))


def test_probe_command_unreachable_exits_6(cn):
    from harness.instance import free_port
    code, out, err = tool(cn, "--json", "probe", "--connect", f"127.0.0.1:{free_port()}")
    assert code == 6, err
    assert json.loads(out)["verdict"]["reachable"] is False
