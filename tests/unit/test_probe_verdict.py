"""Unit tests for the apply gate (`verdict`) and the JSON / table output."""

from __future__ import annotations

import dataclasses
import json

from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify.probe import ProbeResult

IE = P.get_profile("browser-ie11-win7")
SAFARI = P.get_profile("browser-safari-macos")
CURL = P.get_profile("api-curl")
REQUESTS = P.get_profile("api-python-requests")
JAVA = P.get_profile("api-java-nopha")


def res(profile, tls="1.2", how=None, status=200, error=None, **kw):
    return ProbeResult(profile=profile, tls=tls, cert_requested=how is not None, how=how, status=status, error=error, **kw)


def target_behaviour(tls="1.3"):
    how = P.HOW_POST_HANDSHAKE if tls == "1.3" else P.HOW_RENEGOTIATION
    return [
        res(IE, "1.2"),
        res(SAFARI, tls),
        res(CURL, tls, how, verified="SUCCESS", cert_sent=True),
        res(REQUESTS, tls, how),
        res(JAVA, tls, None if tls == "1.3" else how, 403 if tls == "1.3" else 200),
    ]


class TestVerdict:
    def test_ok_tls13(self):
        v = P.verdict(target_behaviour("1.3"))
        assert v.ok and v.summary == "browser not asked, API client asked" and v.problems == ()
        assert len(v.warnings) == 1 and v.warnings[0].startswith("api-java-nopha: 403 under TLS 1.3")

    def test_ok_tls12(self):
        v = P.verdict(target_behaviour("1.2"))
        assert v.ok and v.warnings == ()

    def test_browser_asked(self):
        results = target_behaviour()
        results[0] = res(IE, "1.2", P.HOW_RENEGOTIATION, None, error="renegotiation refused")
        v = P.verdict(results)
        assert not v.ok
        assert v.summary == "browser asked (browser-ie11-win7: renegotiation), API client asked"
        assert v.problems == ("browser-ie11-win7 was asked for a client certificate (renegotiation, TLS 1.2)",)

    def test_browser_refused_under_tls13_without_pha(self):
        # The request is invisible to a client without PHA; Apache answers 403.
        blind_ie = dataclasses.replace(IE, pha=False)
        results = target_behaviour()
        results[0] = res(blind_ie, "1.3", None, 403)
        v = P.verdict(results)
        assert not v.ok
        assert v.summary == "browser asked (browser-ie11-win7: 403 without PHA), API client asked"
        assert v.problems[0].startswith("browser-ie11-win7: 403 under TLS 1.3 without post-handshake auth")
        # With PHA offered, a 403 is not a certificate request: only a warning.
        results[0] = res(IE, "1.3", None, 403)
        v = P.verdict(results)
        assert v.ok and "browser-ie11-win7: 403 Forbidden" in v.warnings
        # Under TLS 1.2 a 403 without a request is not a certificate issue either.
        results[0] = res(blind_ie, "1.2", None, 403)
        assert P.verdict(results).ok

    def test_everyone_asked_in_handshake(self):
        results = [res(p, "1.3", P.HOW_HANDSHAKE) for p in (IE, SAFARI, CURL, JAVA)]
        v = P.verdict(results)
        assert not v.ok and v.summary.startswith("browser asked (browser-ie11-win7: handshake, browser-safari-macos")
        assert v.summary.endswith(", API client asked")

    def test_api_not_asked(self):
        v = P.verdict([res(IE), res(CURL, "1.3", None, 200)])
        assert not v.ok and v.summary == "browser not asked, API client not asked (api-curl)"
        assert v.problems == ("api-curl was not asked for a client certificate",)

    def test_api_without_pha_does_not_count(self):
        v = P.verdict([res(IE), res(JAVA, "1.3", None, 403)])
        assert not v.ok and "no API client probed" in v.summary

    def test_browser_inconclusive(self):
        v = P.verdict([res(IE, None, None, None, error="connection refused"), res(CURL, "1.2", P.HOW_RENEGOTIATION)])
        assert not v.ok
        assert v.summary == "browser inconclusive (browser-ie11-win7), API client asked"
        assert v.problems == ("browser-ie11-win7: inconclusive, no TLS handshake: connection refused",)

    def test_api_error_reported(self):
        v = P.verdict([res(IE), res(CURL, None, None, None, error="timeout")])
        assert v.problems == ("api-curl was not asked for a client certificate: timeout",)

    def test_nothing_probed(self):
        v = P.verdict([])
        assert not v.ok and v.summary == "no browser probed, no API client probed" and len(v.problems) == 2

    def test_errors_elsewhere_are_warnings(self):
        results = target_behaviour("1.2")
        results[2] = res(CURL, "1.2", P.HOW_RENEGOTIATION, None, error="tlsv1 alert unknown ca", verified="FAILED")
        v = P.verdict(results)
        assert v.ok and v.warnings == ("api-curl: tlsv1 alert unknown ca",)

    def test_json(self):
        v = P.verdict(target_behaviour())
        doc = v.to_json()
        assert set(doc) == {"ok", "summary", "problems", "warnings"} and doc["ok"] is True
        json.dumps(doc)


class TestJson:
    def test_result(self):
        r = res(CURL, "1.3", P.HOW_POST_HANDSHAKE, 200, verified="SUCCESS", cert_sent=True, backend="python")
        doc = r.to_json()
        for key in ("name", "user_agent", "tls", "cert_requested", "how", "status", "error"):
            assert key in doc
        assert doc["name"] == "api-curl" and doc["user_agent"] == CURL.user_agent and doc["tls"] == "1.3"
        assert doc["cert_requested"] is True and doc["how"] == "post-handshake" and doc["status"] == 200
        assert doc["error"] is None and doc["verified"] == "SUCCESS" and doc["backend"] == "python"
        assert json.loads(json.dumps(doc)) == doc

    def test_document(self):
        results = target_behaviour()
        doc = P.results_to_json(results)
        assert list(doc) == ["profiles"] and [p["name"] for p in doc["profiles"]] == [r.name for r in results]
        doc = P.results_to_json(results, P.verdict(results))
        assert doc["verdict"]["summary"] == "browser not asked, API client asked"
        json.dumps(doc)


class TestTable:
    HEADER = ["PROFILE", "TLS", "CERT", "PHA", "ASKED", "HOW", "STATUS", "VERIFIED", "OUTCOME", "NOTE"]

    def test_layout(self):
        results = [
            res(IE, "1.2", P.HOW_RENEGOTIATION, 200, verified="NONE"),
            res(CURL, "1.3", P.HOW_POST_HANDSHAKE, 200, verified="SUCCESS"),
            res(JAVA, "1.3", None, 403, diagnosis=P.diagnose(JAVA, "1.3", None, 403)),
            res(SAFARI, None, None, None, error="connect: refused"),
        ]
        text = P.format_table(results)
        lines = text.splitlines()
        assert text.endswith("\n") and len(lines) == 5
        assert lines[0].split() == self.HEADER
        assert lines[1].split() == ["browser-ie11-win7", "1.2", "no", "yes", "yes", "renegotiation", "200", "NONE", "ok"]
        assert lines[2].split() == ["api-curl", "1.3", "yes", "yes", "yes", "post-handshake", "200", "SUCCESS",
                                    "authenticated"]
        assert lines[3].split()[:9] == ["api-java-nopha", "1.3", "yes", "no", "no", "-", "403", "-", "refused"]
        assert lines[3].endswith("no post-handshake auth: 403 (AH10158)")
        assert lines[4].split()[:9] == ["browser-safari-macos", "-", "no", "yes", "no", "-", "-", "-", "failed"]
        assert lines[4].endswith("connect: refused")
        # columns line up
        col = lines[0].index("TLS")
        assert all(line[col - 2 : col] == "  " for line in lines)
        assert all(line == line.rstrip() for line in lines)

    def test_skipped_row(self):
        row = P.skipped_result(dataclasses.replace(CURL, tls="1.3"), "the server does not offer TLS 1.3")
        line = P.format_table([row]).splitlines()[1]
        assert line.split()[:9] == ["api-curl", "(1.3)", "yes", "yes", "no", "-", "-", "-", "skipped"]
        assert line.endswith("server does not offer TLS 1.3")

    def test_empty(self):
        assert P.format_table([]).split() == self.HEADER
