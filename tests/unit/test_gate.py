"""Unit tests of the live gate (`gate.plan`, `gate.judge`): observations in, verdict out.

The observations come from a small model of what Apache does (docs/facts.md,
measured in tests/integration/test_matrix.py and test_gate_live.py): a
per-directory ``SSLVerifyClient optional`` behind a User-Agent pattern asks
by renegotiation (TLS 1.2) or post-handshake auth (TLS 1.3); a client that
cannot answer gets 403 (no PHA) or no answer (renegotiation refused); a
vhost-level ``optional`` asks everyone in the handshake; a ``require``
Location aborts the handshake without a valid certificate.
"""

import json
import re
from typing import List, Optional, Sequence

import pytest

from dataone_cn_sslverify import gate as G
from dataone_cn_sslverify import policy
from dataone_cn_sslverify.clients import API, BROWSER, CLIENTS
from dataone_cn_sslverify.results import ProbeResult
from dataone_cn_sslverify.tlsobserve import (HOW_HANDSHAKE, HOW_POST_HANDSHAKE, HOW_RENEGOTIATION,
                                             HOW_RENEGOTIATION_REFUSED)

TARGET = policy.DEFAULT_PATTERN
WEBKIT = "webkit"
REPL = "/metacat/servlet/replication"
BOTH = ("1.2", "1.3")


def server(check: G.Check, *, pattern: Optional[str] = TARGET, replication: str = "require",
           untrusted_ok: bool = False) -> ProbeResult:
    """What the modelled server answers to one check.

    ``pattern``: the User-Agent pattern exempted from a per-directory
    ``optional`` on /cn (None: vhost-level ``optional``, asked in the
    handshake). ``replication``: "require", or "open" (a later
    ``SSLVerifyClient none`` on the path). ``untrusted_ok``: verification
    does not fail an unknown CA (``optional_no_ca``).
    """
    p = check.profile
    tls = p.tls
    has = check.cert != G.NOCERT
    bad = check.cert == G.UNTRUSTED and not untrusted_ok

    def answered(how: str) -> ProbeResult:
        if bad:
            return ProbeResult(p, tls=tls, cert_requested=True, how=how, cert_sent=True, verified="FAILED",
                               alerts=("fatal unknown_ca",), error="tlsv1 alert unknown ca")
        return ProbeResult(p, tls=tls, cert_requested=True, how=how, status=200, cert_sent=has,
                           verified="SUCCESS" if has else "NONE")

    def per_dir(required: bool) -> ProbeResult:
        if tls == "1.3" and not p.pha:
            return ProbeResult(p, tls=tls, status=403, diagnosis="AH10158")
        if tls == "1.2" and not p.renegotiation:
            return ProbeResult(p, tls=tls, cert_requested=True, how=HOW_RENEGOTIATION_REFUSED, error="eof")
        r = answered(HOW_POST_HANDSHAKE if tls == "1.3" else HOW_RENEGOTIATION)
        if required and not has:
            return ProbeResult(p, tls=tls, cert_requested=True, how=r.how, verified="NONE",
                               alerts=("fatal certificate_required",), error="certificate required")
        return r

    if check.path == REPL:
        if replication == "open":
            return ProbeResult(p, tls=tls, status=200)
        return per_dir(True)
    if pattern is None:
        return answered(HOW_HANDSHAKE)
    if re.search(pattern, p.user_agent, re.I):
        return ProbeResult(p, tls=tls, status=200)
    return per_dir(False)


def observe(offered: Sequence[str] = BOTH, *, trusted: bool = True, required=(REPL,), **model) -> List[G.Seen]:
    return [G.Seen(c, server(c, **model)) for c in G.plan(offered, required, trusted_cert=trusted)]


def judge(mode: str = G.POLICY, offered: Sequence[str] = BOTH, *, trusted: bool = True, **model) -> G.Verdict:
    return G.judge(mode, observe(offered, trusted=trusted, **model), offered=offered, trusted_cert=trusted)


class TestPlan:
    def test_each_wire_behaviour_once(self):
        checks = G.plan(BOTH, (REPL,), trusted_cert=True)
        keys = [(c.role, c.path, c.cert, c.profile.user_agent, c.profile.headers, c.profile.tls, c.profile.pha,
                 c.profile.renegotiation) for c in checks]
        assert len(keys) == len(set(keys))
        assert len({c.name for c in checks}) == len(checks)
        by_role = {r: [c for c in checks if c.role == r] for r in G.ROLES}
        # every User-Agent of the catalogue once (browsers: at the highest version they speak), and one of
        # each kind at every version
        for kind, role in ((BROWSER, G.R_BROWSER), (API, G.R_API)):
            uas = {(c.user_agent, c.headers) for c in CLIENTS if c.kind == kind}
            assert {(c.profile.user_agent, c.profile.headers) for c in by_role[role]} == uas
            for tls in BOTH:
                assert any(c.profile.tls == tls for c in by_role[role])
        assert [c.profile.tls for c in by_role[G.R_BROWSER] if c.profile.client == "browser-ie11-win7"] == ["1.2"]
        assert [c.profile.tls for c in by_role[G.R_API] if c.profile.client == "api-java-httpclient"] == ["1.3"]
        assert len(checks) == 28
        assert [c.profile.tls for c in by_role[G.R_UNTRUSTED]] == ["1.2", "1.3"]
        assert len(by_role[G.R_API_NOCERT]) == 1
        # the real stacks that cannot answer: no renegotiation under 1.2, no PHA under 1.3
        assert [(c.profile.tls, c.profile.pha, c.profile.renegotiation) for c in by_role[G.R_EFFECT]] == [
            ("1.2", False, False), ("1.3", False, True)]
        # replication: without and with an untrusted certificate over both versions, a browser, the trusted one
        req = [(c.profile.kind, c.profile.tls, c.cert) for c in by_role[G.R_REQUIRED]]
        assert sorted(req) == [(API, "1.2", G.NOCERT), (API, "1.2", G.UNTRUSTED), (API, "1.3", G.NOCERT),
                               (API, "1.3", G.UNTRUSTED), (BROWSER, "1.3", G.NOCERT)]
        assert {c.path for c in by_role[G.R_REQUIRED]} == {REPL} and len(by_role[G.R_REQUIRED_OK]) == 1
        # every probe but the effect rows can answer a per-directory request: a request is never hidden
        for c in checks:
            if c.role != G.R_EFFECT:
                assert c.profile.pha and c.profile.renegotiation, c.name
        assert all(c.profile.cert == (c.cert != G.NOCERT) for c in checks)

    def test_tls12_only_and_no_certificate(self):
        checks = G.plan(("1.2",), (), trusted_cert=False)
        assert {c.profile.tls for c in checks} == {"1.2"}
        assert not any(c.cert == G.TRUSTED for c in checks)
        assert not any(c.profile.client == "browser-ie11-win7" and c.profile.tls == "1.3" for c in G.plan(BOTH))


class TestPromise:
    def test_target_policy_keeps_the_promise(self):
        v = judge()
        assert v.ok, v.problems
        assert v.summary.startswith("no browser asked (8 probes); API clients asked and verified (9 probes); "
                                    "untrusted certificate refused; /metacat/servlet/replication still require")
        assert sorted((e.client, e.tls) for e in v.effects) == [
            ("api-d1-java", "1.3"), ("api-go", "1.2"), ("api-go", "1.3"), ("api-java-httpclient", "1.3"),
            ("api-python-ssl", "1.3")]
        assert all(e.confirmed for e in v.effects)
        assert any("SSLProtocol -all +TLSv1.2" in m for m in v.mitigations)
        assert any("RenegotiateOnceAsClient" in m for m in v.mitigations)

    def test_tls12_opt_in_leaves_only_go(self):
        v = judge(offered=("1.2",))
        assert v.ok and [(e.client, e.tls) for e in v.effects] == [("api-go", "1.2")]

    def test_pattern_exempting_api_clients_fails(self):
        v = judge(pattern=TARGET[:-1] + "|.)")
        assert not v.ok and "API clients not asked and verified (api-curl/1.2/cert" in v.summary
        assert any(p.startswith("api-curl/1.2/cert (User-Agent 'curl/7.88.1') was not asked") for p in v.problems)
        assert v.effects == ()  # nobody is asked, so nobody fails for lack of PHA: that is not an effect

    def test_pattern_exempting_one_api_family_fails(self):
        v = judge(pattern=TARGET[:-1] + "|python)")
        assert not v.ok
        failed = {p.split("/")[0] for p in v.problems}
        assert failed == {"api-python-requests", "api-d1-python", "api-python-ssl"}

    def test_replication_opened_fails(self):
        v = judge(replication="open")
        assert not v.ok and "/metacat/servlet/replication open without a valid certificate" in v.summary
        assert sum(1 for p in v.problems if p.startswith("/metacat/servlet/replication requires")) == 5

    def test_untrusted_certificate_accepted_fails(self):
        v = judge(untrusted_ok=True)
        assert not v.ok and "untrusted certificate answered" in v.summary
        assert any("untrusted CA on /cn/" in p for p in v.problems)

    def test_browsers_asked_fail(self):
        for pattern, asked in ((None, 8), (WEBKIT, 3)):  # everyone in the handshake; IE, Firefox, MetacatUI XHR
            v = judge(pattern=pattern)
            assert not v.ok
            assert sum(1 for p in v.problems if "the policy never asks browsers" in p) == asked, pattern

    def test_without_a_trusted_certificate_asked_is_enough_and_said(self):
        v = judge(trusted=False)
        assert v.ok and "API clients asked (9 probes)" in v.summary
        assert any("DATAONE_CN_SSLVERIFY_CLIENT_CERT" in w for w in v.warnings)
        assert not judge(trusted=False, pattern=TARGET[:-1] + "|curl)").ok

    def test_unreachable(self):
        seen = [G.Seen(c, ProbeResult(c.profile, error="connection refused")) for c in G.plan(BOTH)]
        v = G.judge(G.POLICY, seen)
        assert not v.ok and not v.reachable and "connection refused" in v.summary

    def test_inconclusive_browser_fails(self):
        seen = observe()
        i = next(i for i, s in enumerate(seen) if s.check.role == G.R_BROWSER)
        seen[i] = G.Seen(seen[i].check, ProbeResult(seen[i].check.profile, error="timeout"))
        v = G.judge(G.POLICY, seen, trusted_cert=True)
        assert not v.ok and "inconclusive" in v.problems[0]

    def test_nothing_to_judge(self):
        seen = [s for s in observe() if s.check.role != G.R_BROWSER]
        assert "no browser User-Agent was probed" in G.judge(G.POLICY, seen, trusted_cert=True).problems


class TestOriginal:
    @pytest.mark.parametrize("pattern", [None, WEBKIT])
    def test_original_blocks_pass_after_revert(self, pattern):
        v = judge(G.ORIGINAL, pattern=pattern)
        assert v.ok, v.problems
        assert v.effects == ()

    def test_original_must_ask_ie11_again(self):
        v = judge(G.ORIGINAL)  # the target pattern after a "revert": IE11 not asked
        assert not v.ok and "browser-ie11-win7 not asked" in v.problems[0]

    def test_opened_replication_is_reported_not_judged(self):
        v = judge(G.ORIGINAL, pattern=WEBKIT, replication="open")
        assert v.ok and any(w.startswith("/metacat/servlet/replication requires") for w in v.warnings)


def test_no_comparison_with_before_so_no_ratchet():
    """The verdict is a function of the state after: the target passes whatever was live before."""
    assert "before" not in G.judge.__code__.co_varnames
    assert judge().ok and not judge(pattern=TARGET[:-1] + "|.)").ok


def test_verdict_and_rows_round_trip_json():
    v = judge()
    again = G.Verdict.from_json(json.loads(json.dumps(v.to_json())))
    assert again == v
    seen = observe()
    back = [G.Seen.from_json(json.loads(json.dumps(s.to_json()))) for s in seen]
    assert [(s.check.role, s.check.path, s.check.cert, s.result.to_json()) for s in back] == \
        [(s.check.role, s.check.path, s.check.cert, s.result.to_json()) for s in seen]
    assert G.judge(G.POLICY, back, trusted_cert=True) == v
