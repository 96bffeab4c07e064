"""`probe` against a real Apache 2.4 (tests/harness), both backends.

One running instance per fixture vhost variant for the whole module (probes
do not change server state), each profile probed with the TLS version pinned
so TLS 1.2 (renegotiation) and TLS 1.3 (post-handshake auth) are both seen.
Where it matters the probe's answer is cross-checked against an independent
client (curl -v, through the harness) and against Apache's error log.
"""

import json
from typing import Dict, Iterator, List, Optional

import pytest

from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify import gate as G
from dataone_cn_sslverify import livecheck
from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify import results as R
from dataone_cn_sslverify import tlsobserve as T
from dataone_cn_sslverify import records
from harness import VARIANTS, ApacheInstance, Pki
from harness.instance import USER_AGENTS

pytestmark = pytest.mark.integration

# The python backend needs CPython's _msg_callback (3.8+); under 3.6 only openssl runs.
BACKENDS = [b for b in P.BACKENDS if b != "python" or P._HAS_MSG_CALLBACK]
TLS = ["1.2", "1.3"]
PATH = "/cn/"
VERIFY_HEADER = "X-Test-Client-Verify"  # the fixture vhosts echo SSL_CLIENT_VERIFY here

REPL = "/metacat/servlet/replication"


def instrument(client: str, **kw: object) -> C.Profile:
    """A catalogue client with a stack that answers every request (renegotiation and PHA): requests are visible."""
    c = C.get_client(client)
    return C.Profile(client, c.kind, c.user_agent, pha=True, renegotiation=True, client=client, **kw)  # type: ignore[arg-type]


IE11 = instrument("browser-ie11-win7")
SAFARI = instrument("browser-safari-macos")
CURL = instrument("api-curl", cert=True)
JAVA = records.replace(instrument("api-java-httpclient", cert=True), pha=False)
#: One profile per browser family and the API stacks: the requests each variant makes are visible.
PROFILES = [instrument(c.id) for c in C.CLIENTS if c.kind == C.BROWSER and c.id != "browser-metacatui-xhr"] + [
    CURL, instrument("api-python-requests", cert=True), JAVA]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Dict[str, ApacheInstance]]:
    """A running instance of every fixture variant (started lazily, stopped at module end)."""
    started: Dict[str, ApacheInstance] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, variant: str) -> ApacheInstance:
            inst = ApacheInstance(tmp_path_factory.mktemp("probe-" + variant), variant, pki=pki)
            started[variant] = inst
            inst.start()
            self[variant] = inst
            return inst

    yield Lazy()
    leaked = {}
    for inst in started.values():
        inst.cleanup()
        if inst.processes():
            leaked[inst.variant] = inst.processes()
    assert not leaked, "Apache processes survived teardown: %s" % leaked


def run(
    inst: ApacheInstance,
    profile: C.Profile,
    tls: Optional[str],
    backend: str,
    *,
    cert: str = "trusted",
    path: str = PATH,
    **kw: object,
) -> R.ProbeResult:
    pki = inst.pki
    certs = {
        "trusted": (pki.client_cert, pki.client_key),
        "untrusted": (pki.untrusted_cert, pki.untrusted_key),
        "none": (None, None),
    }[cert]
    kw.setdefault("verify_headers", (VERIFY_HEADER,))
    result = P.probe(
        "127.0.0.1",
        inst.https_port,
        inst.server_name,
        path,
        records.replace(profile, tls=tls),
        client_cert=str(certs[0]) if certs[0] else None,
        client_key=str(certs[1]) if certs[1] else None,
        backend=backend,
        **kw,  # type: ignore[arg-type]
    )
    assert result.backend == backend
    if tls is not None and result.tls is not None:
        assert result.tls == tls
    return result


def run_all(inst: ApacheInstance, tls: str, backend: str) -> List[R.ProbeResult]:
    return [run(inst, p, tls, backend) for p in PROFILES]


def gate(inst: ApacheInstance, mode: str = G.POLICY, **kw: object) -> livecheck.Outcome:
    """The live gate against the instance, with the harness's trusted client certificate."""
    kw.setdefault("required", [REPL])
    return livecheck.run(mode, "127.0.0.1", inst.https_port, inst.server_name,
                         trusted=(str(inst.pki.client_cert), str(inst.pki.client_key)),
                         verify_headers=(VERIFY_HEADER,), **kw)  # type: ignore[arg-type]


def row(r: R.ProbeResult) -> str:
    return R.format_table([r])


# ---------------------------------------------------------------- plain-optional


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tls", TLS)
def test_plain_optional_asks_everyone_in_the_handshake(servers, backend, tls):
    results = run_all(servers["plain-optional"], tls, backend)
    for r in results:
        assert r.tls == tls and r.cert_requested and r.how == T.HOW_HANDSHAKE, row(r)
        assert r.status == 200 and r.error is None, row(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_optional_fails_the_policy_gate_and_passes_as_an_original(servers, backend):
    out = gate(servers["plain-optional"], backend=backend)
    v = out.verdict
    assert not v.ok and v.summary.startswith("browsers asked (browser-ie11-win7/1.2/nocert/reneg, "), v
    assert "API clients asked and verified (9 probes)" in v.summary
    assert all("(handshake)" in p for p in v.problems if "browsers" in p)
    v = gate(servers["plain-optional"], G.ORIGINAL, backend=backend).verdict
    assert v.ok, v.problems


# ---------------------------------------------------------------- webkit-only (production before the change)


@pytest.mark.parametrize("backend", BACKENDS)
def test_webkit_only_tls12_asks_ie11_by_renegotiation_not_safari(servers, backend):
    inst = servers["webkit-only"]
    ie = run(inst, IE11, "1.2", backend)
    assert ie.cert_requested and ie.how == T.HOW_RENEGOTIATION, row(ie)
    assert ie.status == 200 and ie.verified == "NONE" and not ie.cert_sent, row(ie)
    for name in ("browser-safari-macos", "browser-safari-ios", "browser-chrome"):
        r = run(inst, instrument(name), "1.2", backend)
        assert not r.cert_requested and r.how is None and r.status == 200, row(r)
    v = gate(inst, backend=backend, required=()).verdict
    assert not v.ok
    assert v.summary.startswith(
        "browsers asked (browser-ie11-win7/1.2/nocert/reneg, browser-metacatui-xhr/1.2/nocert/reneg, "
        "browser-firefox/1.3/nocert/pha); API clients asked and verified")


@pytest.mark.parametrize("backend", BACKENDS)
def test_webkit_only_tls13_request_is_visible_only_with_pha(servers, backend):
    inst = servers["webkit-only"]
    # The instrument (offers PHA) sees the request...
    ie = run(inst, IE11, "1.3", backend)
    assert ie.cert_requested and ie.how == T.HOW_POST_HANDSHAKE and ie.status == 200, row(ie)
    # ...a client without PHA sees none, only a 403 -- and the gate still catches it.
    blind = run(inst, records.replace(IE11, pha=False), "1.3", backend)
    assert not blind.cert_requested and blind.status == 403, row(blind)
    safari = run(inst, SAFARI, "1.3", backend)
    assert not safari.cert_requested and safari.status == 200, row(safari)


def test_webkit_only_probe_agrees_with_curl(servers):
    """An independent client (curl -v) sees the same requests as both backends."""
    inst = servers["webkit-only"]
    for tls in TLS:
        for ua_key, profile in (("ie11", IE11), ("safari", SAFARI), ("curl", CURL)):
            ref = inst.request(PATH, user_agent=USER_AGENTS[ua_key], tls=tls)
            assert ref.cert_requested is not None, ref
            for backend in BACKENDS:
                r = run(inst, records.replace(profile, user_agent=USER_AGENTS[ua_key]), tls, backend, cert="none")
                assert r.cert_requested == ref.cert_requested, (tls, ua_key, backend, row(r), str(ref))
                assert r.status == ref.status, (tls, ua_key, backend, row(r), str(ref))
                assert r.verified == ref.client_verify, (tls, ua_key, backend, row(r), str(ref))


@pytest.mark.parametrize("variant", ["webkit-if-else", "webkit-only"])
def test_old_variants_fail_the_policy_gate_and_pass_as_originals(servers, variant):
    for mode, ok in ((G.POLICY, False), (G.ORIGINAL, True)):
        v = gate(servers[variant], mode).verdict
        assert v.ok is ok, (variant, mode, v)
        assert ok or "browser-ie11-win7/1.2/nocert/reneg" in v.summary, v


# ---------------------------------------------------------------- browser-list (the target)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tls", TLS)
def test_browser_list_browsers_not_asked_api_asked(servers, backend, tls):
    results = run_all(servers["browser-list"], tls, backend)
    by = {r.name: r for r in results}
    for r in results:
        if r.kind == C.BROWSER:
            assert not r.cert_requested and r.how is None and r.status == 200 and r.error is None, row(r)

    curl = by["api-curl"]
    want = T.HOW_RENEGOTIATION if tls == "1.2" else T.HOW_POST_HANDSHAKE
    assert curl.cert_requested and curl.how == want, row(curl)
    assert curl.cert_sent and curl.status == 200 and curl.verified == "SUCCESS", row(curl)
    assert by["api-python-requests"].how == want and by["api-python-requests"].status == 200

    java = by["api-java-httpclient"]
    if tls == "1.2":
        assert java.cert_requested and java.how == T.HOW_RENEGOTIATION and java.status == 200, row(java)
    else:  # no PHA under TLS 1.3: never asked, refused (docs/facts.md: AH10158)
        assert not java.cert_requested and java.status == 403, row(java)

    doc = json.loads(json.dumps(R.results_to_json(results)))
    assert [p["name"] for p in doc["profiles"]] == [p.name for p in PROFILES]
    assert {"name", "user_agent", "tls", "cert_requested", "status"} <= set(doc["profiles"][0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_browser_list_keeps_the_promise(servers, backend):
    out = gate(servers["browser-list"], backend=backend)
    v = out.verdict
    assert v.ok, v.problems
    assert v.summary == ("no browser asked (8 probes); API clients asked and verified (9 probes); untrusted "
                         "certificate refused; /metacat/servlet/replication still require a certificate; known "
                         "effect: 4 API client families cannot use /cn")
    assert all(e.confirmed for e in v.effects) and out.offered == ("1.2", "1.3")
    by = {s.check.name: s.result for s in out.seen}
    assert by["api-curl/1.3/untrusted"].verified == "FAILED" and by["api-curl/1.3/untrusted"].status is None
    assert by["api-java-httpclient/1.3/cert"].status == 403  # the real stack: the known effect, on the wire
    assert by["api-java-httpclient/1.3/cert/pha"].verified == "SUCCESS"  # its User-Agent is asked


@pytest.mark.parametrize("backend", BACKENDS)
def test_browser_list_tls13_without_pha_gets_403_with_or_without_cert(servers, backend):
    inst = servers["browser-list"]
    mark = inst.error_log_mark()
    for cert in ("trusted", "none"):
        r = run(inst, JAVA, "1.3", backend, cert=cert)
        assert r.tls == "1.3" and not r.cert_requested and r.status == 403 and not r.cert_sent, row(r)
    assert "AH10158" in inst.error_log_since(mark)
    # The same client with PHA is asked and gets in.
    r = run(inst, records.replace(JAVA, pha=True), "1.3", backend)
    assert r.how == T.HOW_POST_HANDSHAKE and r.status == 200 and r.verified == "SUCCESS", row(r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tls", TLS)
def test_browser_list_certificate_outcomes(servers, backend, tls):
    inst = servers["browser-list"]
    # No certificate: asked, optional, so 200 and NONE.
    r = run(inst, CURL, tls, backend, cert="none")
    assert r.cert_requested and not r.cert_sent and r.status == 200 and r.verified == "NONE", row(r)
    # Untrusted certificate: asked, verification fails, the server aborts with an alert.
    r = run(inst, CURL, tls, backend, cert="untrusted")
    assert r.cert_requested and r.cert_sent and r.status is None, row(r)
    assert r.verified == "FAILED" and "fatal unknown_ca" in r.alerts and r.error, row(r)
    # Inference without the echo header agrees with the server's SSL_CLIENT_VERIFY.
    for cert, want in (("trusted", "SUCCESS"), ("none", "NONE")):
        r = run(inst, CURL, tls, backend, cert=cert, verify_headers=())
        echoed = run(inst, CURL, tls, backend, cert=cert)
        assert r.verified == echoed.verified == want, (row(r), row(echoed))


@pytest.mark.parametrize("backend", BACKENDS)
def test_browser_list_replication_still_requires_a_certificate(servers, backend):
    inst = servers["browser-list"]
    path = "/metacat/servlet/replication"
    for tls in TLS:
        r = run(inst, SAFARI, tls, backend, path=path)
        # asked after the request (renegotiation / PHA), no certificate: the
        # server aborts with an alert (handshake_failure / certificate_required)
        assert r.cert_requested and r.how != T.HOW_HANDSHAKE, row(r)
        assert r.status is None and r.verified == "NONE" and r.alerts and r.error, row(r)
        r = run(inst, CURL, tls, backend, path=path)
        assert r.cert_requested and r.status == 200 and r.verified == "SUCCESS", row(r)


# ---------------------------------------------------------------- connection details


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_verification_with_ca_file(servers, backend):
    inst = servers["browser-list"]
    ca = str(inst.pki.ca_cert)
    r = run(inst, CURL, None, backend, ca_file=ca)
    assert r.tls == "1.3" and r.status == 200 and r.how == T.HOW_POST_HANDSHAKE, row(r)
    # SNI / Host / name check all use server_name: a name the certificate lacks fails.
    r = P.probe("127.0.0.1", inst.https_port, "wrong.example", PATH, CURL, ca_file=ca, backend=backend)
    assert r.tls is None and r.status is None and "verif" in (r.error or ""), row(r)
    # Without ca_file the probe does not verify the server (our own local server).
    r = P.probe("127.0.0.1", inst.https_port, inst.server_name, PATH, SAFARI, backend=backend)
    assert r.status == 200 and r.error is None, row(r)


def test_openssl_fallback_is_chosen_and_works_without_the_python_hook(servers, monkeypatch):
    monkeypatch.setattr(P, "_HAS_MSG_CALLBACK", False)
    inst = servers["browser-list"]
    r = P.probe("127.0.0.1", inst.https_port, inst.server_name, PATH, records.replace(CURL, tls="1.3"),
                client_cert=str(inst.pki.client_pem))
    assert r.backend == "openssl" and r.how == T.HOW_POST_HANDSHAKE and r.status == 200 and r.verified == "SUCCESS"


def test_table_of_the_gate_rows(servers):
    inst = servers["browser-list"]
    out = gate(inst)
    table = R.format_table([s.result for s in out.seen], [s.check.name for s in out.seen])
    assert len(table.splitlines()) == len(out.seen) + 1
    assert any(ln.startswith("api-curl/1.2/nocert@/metacat/servlet/replication ") for ln in table.splitlines())


def test_unreachable_server_is_its_own_verdict(servers):
    from harness.instance import free_port
    out = livecheck.run(G.POLICY, "127.0.0.1", free_port(), "cn.test")
    assert not out.verdict.ok and not out.verdict.reachable and out.seen == []


def test_all_fixture_variants_known():
    assert set(VARIANTS) == {"plain-optional", "webkit-if-else", "webkit-only", "browser-list"}
