"""Unit tests for the client matrix: catalogue, rows, renegotiation refusal, results.

Results are produced by a small model of what Apache does with a
per-directory ``SSLVerifyClient optional`` (docs/facts.md, measured in
tests/integration/test_matrix.py): a client whose User-Agent the pattern does
not exempt is asked by renegotiation (TLS 1.2) or post-handshake auth (TLS
1.3); a client refusing renegotiation gets no answer; one without PHA gets 403.
"""

import json
import re
from typing import List, Optional, Sequence

import pytest

from dataone_cn_sslverify import policy
from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify import results as R
from dataone_cn_sslverify import tlsobserve as T
from dataone_cn_sslverify.results import ProbeResult
from dataone_cn_sslverify.tlsobserve import Event
from dataone_cn_sslverify import records
from dataone_cn_sslverify import sslcompat

WEBKIT = "webkit"
TARGET = policy.DEFAULT_PATTERN


def model(rows: Sequence[C.Profile], pattern: Optional[str], offered=("1.2", "1.3"), verify="optional") -> List[ProbeResult]:
    """What the measured server does for each row (pattern None: everyone asked in the handshake)."""
    out = []
    for p in rows:
        if p.tls not in offered:
            out.append(R.skipped_result(p, f"the server does not offer TLS {p.tls}"))
            continue
        exempt = pattern is not None and re.search(pattern, p.user_agent, re.I) is not None
        if exempt:
            out.append(ProbeResult(p, tls=p.tls, status=200))
        elif pattern is None:
            out.append(ProbeResult(p, tls=p.tls, cert_requested=True, how=T.HOW_HANDSHAKE, status=200,
                                   verified="SUCCESS" if p.cert else "NONE", cert_sent=p.cert))
        elif p.tls == "1.2" and p.renegotiation:
            out.append(ProbeResult(p, tls="1.2", cert_requested=True, how=T.HOW_RENEGOTIATION, status=200,
                                   verified="SUCCESS" if p.cert else "NONE", cert_sent=p.cert))
        elif p.tls == "1.2":
            out.append(ProbeResult(p, tls="1.2", cert_requested=True, how=T.HOW_RENEGOTIATION_REFUSED,
                                   error="no HTTP response", diagnosis=R.diagnose(p, "1.2", T.HOW_RENEGOTIATION_REFUSED, None)))
        elif p.pha:
            out.append(ProbeResult(p, tls="1.3", cert_requested=True, how=T.HOW_POST_HANDSHAKE, status=200,
                                   verified="SUCCESS" if p.cert else "NONE", cert_sent=p.cert))
        else:
            out.append(ProbeResult(p, tls="1.3", status=403, diagnosis=R.diagnose(p, "1.3", None, 403)))
    return out


ROWS = C.matrix_profiles()


def names(results, outcome):
    return sorted(r.name for r in results if r.outcome == outcome)


class TestCatalogue:
    def test_families_required_by_the_issue(self):
        ids = [c.id for c in C.CLIENTS]
        assert len(ids) == len(set(ids))
        for want in ("browser-ie11-win7", "browser-edge", "browser-chrome", "browser-firefox", "browser-safari-macos",
                     "browser-safari-ios", "browser-metacatui-xhr", "api-curl", "api-python-requests", "api-r-httr",
                     "api-java-httpclient", "api-go", "api-d1-java", "api-d1-python"):
            assert want in ids

    def test_user_agents_and_the_target_pattern(self):
        rx = re.compile(TARGET, re.I)
        for c in C.CLIENTS:
            assert bool(rx.search(c.user_agent)) == (c.kind == C.BROWSER), c.id

    def test_webkit_pattern_misses_ie_and_firefox(self):
        missed = [c.id for c in C.CLIENTS if c.kind == C.BROWSER and not re.search(WEBKIT, c.user_agent, re.I)]
        assert missed == ["browser-ie11-win7", "browser-firefox", "browser-metacatui-xhr"]

    def test_stack_traits(self):
        by = {c.id: c for c in C.CLIENTS}
        assert by["browser-ie11-win7"].max_tls == "1.2" and not by["browser-ie11-win7"].renegotiation
        assert not by["api-go"].renegotiation and not by["api-go"].pha
        assert by["api-java-httpclient"].renegotiation and not by["api-java-httpclient"].pha
        assert by["api-curl"].pha and by["api-python-requests"].pha and by["api-d1-python"].pha
        assert dict(by["browser-metacatui-xhr"].headers)["Origin"] == "https://search.dataone.org"
        # every profile says how its behaviour is known
        assert "behavioural profile, not a real binary" in by["browser-safari-macos"].behaviour
        assert "checked against real Chromium" in by["browser-chrome"].behaviour
        assert "checked against real Firefox ESR" in by["browser-firefox"].behaviour
        assert "checked against real OpenJDK 17" in by["api-java-httpclient"].behaviour
        assert "not installed" in by["api-r-httr"].behaviour

    def test_get_client(self):
        assert C.get_client("api-go").user_agent == "Go-http-client/1.1"
        with pytest.raises(KeyError):
            C.get_client("nope")


class TestMatrixRows:
    def test_rows(self):
        names_ = [p.name for p in ROWS]
        assert len(names_) == len(set(names_)) == 66
        assert len(C.matrix_profiles(certs=(False,))) == 33
        ie = [p.name for p in ROWS if p.client == "browser-ie11-win7"]
        assert ie == ["browser-ie11-win7/1.2/nocert", "browser-ie11-win7/1.2/cert"]  # IE11 has no TLS 1.3
        java = [p for p in ROWS if p.client == "api-java-httpclient"]
        assert [(p.tls, p.cert, p.pha) for p in java] == [("1.2", False, False), ("1.2", True, False),
                                                          ("1.3", False, False), ("1.3", True, False)]
        for p in ROWS:
            assert p.family == p.client and p.note
            assert p.instrument == p.name.endswith("/pha")
            if p.instrument:
                assert p.kind == C.BROWSER and p.tls == "1.3" and p.pha
        assert C.get_profile("api-go/1.3/cert").client == "api-go"
        assert not C.matrix_profiles(instruments=False)[5].instrument
        assert all(p.tls == "1.2" for p in C.matrix_profiles(tls_versions=("1.2",)))

    def test_headers_reach_the_request(self):
        p = C.get_profile("browser-metacatui-xhr/1.2/nocert")
        req = T.build_request("/cn/", "cn.example", 443, p.user_agent, p.headers).decode()
        assert "\r\nOrigin: https://search.dataone.org\r\n" in req and req.endswith("Connection: close\r\n\r\n")
        with pytest.raises(ValueError):
            T.build_request("/cn/", "cn.example", 443, "ua", (("Bad Header", "x"),))
        with pytest.raises(ValueError):
            C.Profile("x", C.API, "ua", headers=(("X", "a\r\nb"),))


class TestRefusedRenegotiation:
    HANDSHAKE = [
        Event("write", "ClientHello"), Event("read", "ServerHello"), Event("read", "Certificate", 500),
        Event("read", "ServerHelloDone"), Event("write", "ClientKeyExchange"), Event("write", "Finished"),
        Event("read", "Finished"),
    ]

    def test_classified(self):
        events = self.HANDSHAKE + [Event("read", "HelloRequest", 4), Event("write", "Alert", 2, "warning no_renegotiation"),
                                   Event("read", "Alert", 2, "fatal handshake_failure")]
        obs = T.classify(events, "1.2")
        assert obs.cert_requested and obs.how == T.HOW_RENEGOTIATION_REFUSED
        assert obs.alerts_received == ("fatal handshake_failure",)

    def test_accepted_renegotiation_is_not_refused(self):
        events = self.HANDSHAKE + [Event("read", "HelloRequest", 4), Event("write", "ClientHello"),
                                   Event("read", "CertificateRequest")]
        assert T.classify(events, "1.2").how == T.HOW_RENEGOTIATION

    def test_client_side_settings(self):
        go = C.get_profile("api-go/1.2/nocert")
        assert "-no_renegotiation" in T.s_client_argv("h", 1, "n", go, "/m")
        assert "-no_renegotiation" not in T.s_client_argv("h", 1, "n", C.get_profile("api-curl/1.2/nocert"), "/m")
        ctx = P._python_context(go, None, None, None)
        assert ctx.options & P._OP_NO_RENEGOTIATION and not sslcompat.post_handshake_auth(ctx)
        ctx = P._python_context(C.get_profile("api-curl/1.3/nocert"), None, None, None)
        assert not ctx.options & P._OP_NO_RENEGOTIATION and sslcompat.post_handshake_auth(ctx)
        assert sslcompat.maximum_version(ctx) == sslcompat.TLSv1_3

    def test_diagnosis(self):
        go = C.get_profile("api-go/1.2/nocert")
        assert "AH02261" in R.diagnose(go, "1.2", T.HOW_RENEGOTIATION_REFUSED, None)
        java = C.get_profile("api-java-httpclient/1.3/nocert")
        assert "AH10158" in R.diagnose(java, "1.3", None, 403)
        assert R.diagnose(C.get_profile("api-curl/1.3/nocert"), "1.3", None, 403) is None  # PHA: a 403 is the app's
        assert "421" in R.diagnose(java, "1.3", None, 421)
        assert R.diagnose(java, "1.2", T.HOW_RENEGOTIATION, 200) is None


class TestResults:
    def test_outcomes(self):
        p = C.get_profile("api-curl/1.2/cert")
        assert ProbeResult(p, tls="1.2", status=200, verified="SUCCESS").outcome == "authenticated"
        assert ProbeResult(p, tls="1.2", status=404).outcome == "ok"
        assert ProbeResult(p, tls="1.3", status=403).outcome == "refused"
        assert ProbeResult(p, tls="1.3", status=421).outcome == "refused"
        assert ProbeResult(p, tls="1.2", status=502).outcome == "refused"
        assert ProbeResult(p, tls="1.2").outcome == "failed"
        assert R.skipped_result(p, "x").outcome == "skipped"
        assert not R.skipped_result(p, "x").works

    def test_json_round_trip(self):
        results = model(ROWS, WEBKIT)
        doc = json.loads(json.dumps(R.results_to_json(results, {"ok": False}, target={"port": 1})))
        assert doc["target"] == {"port": 1} and "verdict" in doc
        again = R.results_from_json(doc)
        assert [r.to_json() for r in again] == [r.to_json() for r in results]
        lone = R.results_from_json(R.results_to_json([ProbeResult(C.Profile("lone", C.API, "ua"), tls="1.3", status=200)]))
        assert lone[0].profile.family == "lone" and lone[0].profile.client == ""
        with pytest.raises(ValueError):
            R.results_from_json({"nope": 1})

    def test_legend(self):
        text = R.format_legend(model(ROWS, TARGET))
        assert text.startswith("clients:\n") and text.count("\n") == len(C.CLIENTS) + 1
        assert "browser-ie11-win7: Internet Explorer 11 on Windows 7; SChannel" in text
        assert R.format_legend([]) == ""


class TestProbeMatrixSkips:
    def test_skips_versions_the_server_refuses(self, monkeypatch):
        monkeypatch.setattr(P, "server_tls_versions", lambda *a, **k: {
            "1.2": P.Handshake(True, "1.2"), "1.3": P.Handshake(False, error="protocol version")})
        seen = []
        monkeypatch.setattr(P, "probe", lambda host, port, sni, path, p, **kw: seen.append(p.name) or ProbeResult(p, tls=p.tls, status=200))
        rows = C.matrix_profiles(clients=[C.get_client("api-java-httpclient")], certs=(False,))
        out = P.probe_matrix("127.0.0.1", 1, "cn", "/cn/", rows)
        assert seen == ["api-java-httpclient/1.2/nocert"]
        assert out[1].skipped and "does not offer TLS 1.3" in out[1].skipped and "protocol version" in out[1].skipped

    def test_unreachable_server_probes_every_row(self, monkeypatch):
        monkeypatch.setattr(P, "server_tls_versions", lambda *a, **k: {
            v: P.Handshake(False, error="refused") for v in C.TLS_VERSIONS})
        monkeypatch.setattr(P, "probe", lambda host, port, sni, path, p, **kw: ProbeResult(p, error="refused"))
        out = P.probe_matrix("127.0.0.1", 1, "cn", "/cn/")
        assert len(out) == 33 and all(r.skipped is None and r.error for r in out)  # no --cert: no cert rows


def test_instrument_rows_reveal_what_real_browsers_cannot_see():
    """Under TLS 1.3 a real browser (no PHA) only shows a 403; its instrument row shows the request."""
    rows = model(ROWS, WEBKIT)
    by = {r.name: r for r in rows}
    assert by["browser-firefox/1.3/nocert"].outcome == "refused"
    assert by["browser-firefox/1.3/nocert/pha"].how == T.HOW_POST_HANDSHAKE
    assert records.asdict(by["browser-chrome/1.3/nocert/pha"])["cert_requested"] is False
