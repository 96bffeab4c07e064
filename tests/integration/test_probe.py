"""`probe` against a real Apache 2.4 (tests/harness), both backends.

One running instance per fixture vhost variant for the whole module (probes
do not change server state), each profile probed with the TLS version pinned
so TLS 1.2 (renegotiation) and TLS 1.3 (post-handshake auth) are both seen.
Where it matters the probe's answer is cross-checked against an independent
client (curl -v, through the harness) and against Apache's error log.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, Iterator, List, Optional

import pytest

from dataone_cn_sslverify import probe as P
from harness import VARIANTS, ApacheInstance, Pki
from harness.instance import USER_AGENTS

pytestmark = pytest.mark.integration

# The python backend needs CPython's _msg_callback (3.8+); under 3.6 only openssl runs.
BACKENDS = [b for b in P.BACKENDS if b != "python" or P._HAS_MSG_CALLBACK]
TLS = ["1.2", "1.3"]
PATH = "/cn/"
VERIFY_HEADER = "X-Test-Client-Verify"  # the fixture vhosts echo SSL_CLIENT_VERIFY here

IE11 = P.get_profile("browser-ie11-win7")
SAFARI = P.get_profile("browser-safari-macos")
CURL = P.get_profile("api-curl")
JAVA = P.get_profile("api-java-nopha")


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
    profile: P.Profile,
    tls: Optional[str],
    backend: str,
    *,
    cert: str = "trusted",
    path: str = PATH,
    **kw: object,
) -> P.ProbeResult:
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
        dataclasses.replace(profile, tls=tls),
        client_cert=str(certs[0]) if certs[0] else None,
        client_key=str(certs[1]) if certs[1] else None,
        backend=backend,
        **kw,  # type: ignore[arg-type]
    )
    assert result.backend == backend
    if tls is not None and result.tls is not None:
        assert result.tls == tls
    return result


def run_all(inst: ApacheInstance, tls: str, backend: str) -> List[P.ProbeResult]:
    return [run(inst, p, tls, backend) for p in P.DEFAULT_PROFILES]


def row(r: P.ProbeResult) -> str:
    return P.format_table([r])


# ---------------------------------------------------------------- plain-optional


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tls", TLS)
def test_plain_optional_asks_everyone_in_the_handshake(servers, backend, tls):
    results = run_all(servers["plain-optional"], tls, backend)
    for r in results:
        assert r.tls == tls and r.cert_requested and r.how == P.HOW_HANDSHAKE, row(r)
        assert r.status == 200 and r.error is None, row(r)
    v = P.verdict(results)
    assert not v.ok
    assert v.summary.startswith("browser asked (browser-ie11-win7: handshake, ")
    assert v.summary.endswith(", API client asked")


# ---------------------------------------------------------------- webkit-only (production before the change)


@pytest.mark.parametrize("backend", BACKENDS)
def test_webkit_only_tls12_asks_ie11_by_renegotiation_not_safari(servers, backend):
    inst = servers["webkit-only"]
    ie = run(inst, IE11, "1.2", backend)
    assert ie.cert_requested and ie.how == P.HOW_RENEGOTIATION, row(ie)
    assert ie.status == 200 and ie.verified == "NONE" and not ie.cert_sent, row(ie)
    for name in ("browser-safari-macos", "browser-safari-ios", "browser-chrome-win10"):
        r = run(inst, P.get_profile(name), "1.2", backend)
        assert not r.cert_requested and r.how is None and r.status == 200, row(r)
    v = P.verdict(run_all(inst, "1.2", backend))
    assert not v.ok
    assert v.summary == (
        "browser asked (browser-ie11-win7: renegotiation, browser-firefox-linux: renegotiation), API client asked"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_webkit_only_tls13_request_is_visible_only_with_pha(servers, backend):
    inst = servers["webkit-only"]
    # The instrument (offers PHA) sees the request...
    ie = run(inst, IE11, "1.3", backend)
    assert ie.cert_requested and ie.how == P.HOW_POST_HANDSHAKE and ie.status == 200, row(ie)
    # ...a client without PHA sees none, only a 403 -- and the gate still catches it.
    blind = run(inst, dataclasses.replace(IE11, pha=False), "1.3", backend)
    assert not blind.cert_requested and blind.status == 403, row(blind)
    safari = run(inst, SAFARI, "1.3", backend)
    assert not safari.cert_requested and safari.status == 200, row(safari)
    v = P.verdict([blind, safari, run(inst, CURL, "1.3", backend)])
    assert not v.ok and v.summary == "browser asked (browser-ie11-win7: 403 without PHA), API client asked"


def test_webkit_only_probe_agrees_with_curl(servers):
    """An independent client (curl -v) sees the same requests as both backends."""
    inst = servers["webkit-only"]
    for tls in TLS:
        for ua_key, profile in (("ie11", IE11), ("safari", SAFARI), ("curl", CURL)):
            ref = inst.request(PATH, user_agent=USER_AGENTS[ua_key], tls=tls)
            assert ref.cert_requested is not None, ref
            for backend in BACKENDS:
                r = run(inst, dataclasses.replace(profile, user_agent=USER_AGENTS[ua_key]), tls, backend, cert="none")
                assert r.cert_requested == ref.cert_requested, (tls, ua_key, backend, row(r), str(ref))
                assert r.status == ref.status, (tls, ua_key, backend, row(r), str(ref))
                assert r.verified == ref.client_verify, (tls, ua_key, backend, row(r), str(ref))


@pytest.mark.parametrize("variant", ["webkit-if-else", "webkit-only"])
def test_old_variants_fail_the_gate_under_both_tls_versions(servers, variant):
    for tls in TLS:
        v = P.verdict(run_all(servers[variant], tls, P.default_backend()))
        assert not v.ok and "browser-ie11-win7" in v.summary, (variant, tls, v)


# ---------------------------------------------------------------- browser-list (the target)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tls", TLS)
def test_browser_list_browsers_not_asked_api_asked(servers, backend, tls):
    results = run_all(servers["browser-list"], tls, backend)
    by = {r.name: r for r in results}
    for r in results:
        if r.kind == P.BROWSER:
            assert not r.cert_requested and r.how is None and r.status == 200 and r.error is None, row(r)

    curl = by["api-curl"]
    want = P.HOW_RENEGOTIATION if tls == "1.2" else P.HOW_POST_HANDSHAKE
    assert curl.cert_requested and curl.how == want, row(curl)
    assert curl.cert_sent and curl.status == 200 and curl.verified == "SUCCESS", row(curl)
    assert by["api-python-requests"].how == want and by["api-python-requests"].status == 200

    java = by["api-java-nopha"]
    if tls == "1.2":
        assert java.cert_requested and java.how == P.HOW_RENEGOTIATION and java.status == 200, row(java)
    else:  # no PHA under TLS 1.3: never asked, refused (docs/facts.md: AH10158)
        assert not java.cert_requested and java.status == 403, row(java)

    v = P.verdict(results)
    assert v.ok, v
    assert v.summary == "browser not asked, API client asked"
    if tls == "1.3":
        assert [w.split(":")[0] for w in v.warnings] == ["api-java-nopha"]
    else:
        assert v.warnings == ()
    doc = json.loads(json.dumps(P.results_to_json(results, v)))
    assert [p["name"] for p in doc["profiles"]] == [p.name for p in P.DEFAULT_PROFILES]
    assert {"name", "user_agent", "tls", "cert_requested", "status"} <= set(doc["profiles"][0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_browser_list_tls13_without_pha_gets_403_with_or_without_cert(servers, backend):
    inst = servers["browser-list"]
    mark = inst.error_log_mark()
    for cert in ("trusted", "none"):
        r = run(inst, JAVA, "1.3", backend, cert=cert)
        assert r.tls == "1.3" and not r.cert_requested and r.status == 403 and not r.cert_sent, row(r)
    assert "AH10158" in inst.error_log_since(mark)
    # The same client with PHA is asked and gets in.
    r = run(inst, dataclasses.replace(JAVA, pha=True), "1.3", backend)
    assert r.how == P.HOW_POST_HANDSHAKE and r.status == 200 and r.verified == "SUCCESS", row(r)


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
        assert r.cert_requested and r.how != P.HOW_HANDSHAKE, row(r)
        assert r.status is None and r.verified == "NONE" and r.alerts and r.error, row(r)
        r = run(inst, CURL, tls, backend, path=path)
        assert r.cert_requested and r.status == 200 and r.verified == "SUCCESS", row(r)


# ---------------------------------------------------------------- connection details


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_verification_with_ca_file(servers, backend):
    inst = servers["browser-list"]
    ca = str(inst.pki.ca_cert)
    r = run(inst, CURL, None, backend, ca_file=ca)
    assert r.tls == "1.3" and r.status == 200 and r.how == P.HOW_POST_HANDSHAKE, row(r)
    # SNI / Host / name check all use server_name: a name the certificate lacks fails.
    r = P.probe("127.0.0.1", inst.https_port, "wrong.example", PATH, CURL, ca_file=ca, backend=backend)
    assert r.tls is None and r.status is None and "verif" in (r.error or ""), row(r)
    # Without ca_file the probe does not verify the server (our own local server).
    r = P.probe("127.0.0.1", inst.https_port, inst.server_name, PATH, SAFARI, backend=backend)
    assert r.status == 200 and r.error is None, row(r)


def test_openssl_fallback_is_chosen_and_works_without_the_python_hook(servers, monkeypatch):
    monkeypatch.setattr(P, "_HAS_MSG_CALLBACK", False)
    inst = servers["browser-list"]
    r = P.probe("127.0.0.1", inst.https_port, inst.server_name, PATH, dataclasses.replace(CURL, tls="1.3"),
                client_cert=str(inst.pki.client_pem))
    assert r.backend == "openssl" and r.how == P.HOW_POST_HANDSHAKE and r.status == 200 and r.verified == "SUCCESS"


def test_probe_all_and_table(servers):
    inst = servers["browser-list"]
    results = P.probe_all("127.0.0.1", inst.https_port, inst.server_name, PATH, client_cert=str(inst.pki.client_pem))
    assert [r.name for r in results] == [p.name for p in P.DEFAULT_PROFILES]
    table = P.format_table(results)
    assert len(table.splitlines()) == len(results) + 1
    assert P.verdict(results).ok


def test_all_fixture_variants_known():
    assert set(VARIANTS) == {"plain-optional", "webkit-if-else", "webkit-only", "browser-list"}
