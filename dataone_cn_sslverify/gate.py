"""The live gate: does the server keep the policy's promise? (pure: observations in, verdict out)

The policy promises, on the live server (docs/gate.md):

* no browser is asked for a client certificate on ``/cn``;
* every API client whose TLS stack can answer a per-directory request
  (post-handshake auth under TLS 1.3, renegotiation under TLS 1.2) is asked
  on ``/cn`` and, presenting a trusted certificate, is verified
  (``SSL_CLIENT_VERIFY=SUCCESS``);
* a certificate from an untrusted CA is refused;
* every ``<Location>`` of the vhost that requires a certificate
  (replication) still refuses a client without one and a client with an
  untrusted one, over every TLS version the server offers.

API clients that cannot answer a per-directory request at all (no PHA
under TLS 1.3: Java 11+, Go, a bare Python ``ssl`` context; Go refusing
renegotiation under TLS 1.2) cannot use ``/cn`` under such a policy: that
is a known effect, reported with its mitigation, not a failure. Nothing is
compared with the state before the change: a gate that compares would
accept a wrong policy that was already live and refuse a right one.

`plan` says which probes to make (each distinct wire behaviour once);
`judge` turns what they saw into a `Verdict`. `livecheck` is the edge that
makes the probes.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .clients import API, BROWSER, CLIENTS, TLS_VERSIONS, Client, Profile
from .results import ProbeResult
from .records import dataclass, replace

__all__ = [
    "POLICY",
    "ORIGINAL",
    "CN_PATH",
    "tls12_opt_in",
    "Check",
    "Seen",
    "Effect",
    "Verdict",
    "plan",
    "judge",
    "known_effects",
]

#: What the gate holds the server to: the policy (after apply) or an original block (after revert).
POLICY = "policy"
ORIGINAL = "original"
MODES = (POLICY, ORIGINAL)

CN_PATH = "/cn/"

def tls12_opt_in(conffile: str = "/etc/dataone/apache2/cn-sslverify.conf") -> str:
    """The mitigation for API clients without post-handshake auth: the policy's TLS 1.2 opt-in (one wording)."""
    from .snippet import TLS12_OPT_IN
    return "the TLS 1.2 opt-in: " + TLS12_OPT_IN.format(conffile=conffile)


GO_RENEGOTIATION = ("Go clients can allow it: tls.Config{Renegotiation: tls.RenegotiateOnceAsClient}")

# Roles of a probe in the plan.
R_BROWSER = "browser"          # a browser's User-Agent on /cn: must not be asked
R_API = "api"                  # an API User-Agent, a stack that can answer: asked (and verified)
R_API_NOCERT = "api-nocert"    # the same without a certificate: asked, still answered (optional)
R_UNTRUSTED = "untrusted"      # an API client with a certificate from an unknown CA: refused
R_EFFECT = "effect"            # the real stack of a client that cannot answer: shows the known effect
R_REQUIRED = "required"        # a path that requires a certificate, without one or with an untrusted one: refused
R_REQUIRED_OK = "required-ok"  # the same path with a trusted certificate (not promised: a warning when it fails)
ROLES = (R_BROWSER, R_API, R_API_NOCERT, R_UNTRUSTED, R_EFFECT, R_REQUIRED, R_REQUIRED_OK)

TRUSTED, UNTRUSTED, NOCERT = "trusted", "untrusted", "none"


@dataclass(frozen=True)
class Check:
    """One probe of the plan: as whom, on which path, with which certificate, and why."""

    role: str
    profile: Profile
    path: str
    cert: str  # trusted | untrusted | none

    @property
    def name(self) -> str:
        return f"{self.profile.name}@{self.path}" if self.path != CN_PATH else self.profile.name


@dataclass(frozen=True)
class Seen:
    """A check and what its probe saw."""

    check: Check
    result: ProbeResult

    def to_json(self) -> Dict[str, Any]:
        """The result's document; ``name`` is the check's (unique, ``@path`` off /cn), ``profile`` the row's."""
        doc = self.result.to_json()
        doc.update({"name": self.check.name, "profile": self.result.name, "role": self.check.role,
                    "path": self.check.path, "cert_source": self.check.cert})
        return doc

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Seen":
        r = ProbeResult.from_json(dict(doc, name=doc.get("profile") or doc["name"]))
        return cls(Check(str(doc.get("role") or R_API), r.profile, str(doc.get("path") or CN_PATH),
                         str(doc.get("cert_source") or (TRUSTED if r.profile.cert else NOCERT))), r)


@dataclass(frozen=True)
class Effect:
    """A client family that cannot use /cn under this policy, why, and what helps."""

    client: str
    label: str
    tls: str
    why: str
    mitigation: str
    confirmed: Optional[bool] = None  # the probe of its real stack showed it (None: not probed)

    def to_json(self) -> Dict[str, Any]:
        return {"client": self.client, "label": self.label, "tls": self.tls, "why": self.why,
                "mitigation": self.mitigation, "confirmed": self.confirmed}

    def line(self) -> str:
        return f"{self.label} cannot use /cn under TLS {self.tls}: {self.why}"


@dataclass(frozen=True)
class Verdict:
    """Whether the live server keeps the promise of ``mode``.

    ``problems`` fail the gate; ``effects`` (known effects of the policy)
    and ``warnings`` do not.
    """

    ok: bool
    mode: str
    summary: str
    problems: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()
    effects: Tuple[Effect, ...] = ()
    reachable: bool = True

    @property
    def mitigations(self) -> Tuple[str, ...]:
        """The distinct mitigations of the effects, in order."""
        out: List[str] = []
        for e in self.effects:
            for m in e.mitigation.split("; "):
                if m not in out:
                    out.append(m)
        return tuple(out)

    def to_json(self) -> Dict[str, Any]:
        return {"ok": self.ok, "mode": self.mode, "summary": self.summary, "reachable": self.reachable,
                "problems": list(self.problems), "warnings": list(self.warnings),
                "effects": [e.to_json() for e in self.effects]}

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Verdict":
        return cls(bool(doc.get("ok")), str(doc.get("mode") or POLICY), str(doc.get("summary") or ""),
                   tuple(doc.get("problems") or ()), tuple(doc.get("warnings") or ()),
                   tuple(Effect(**e) for e in doc.get("effects") or ()), bool(doc.get("reachable", True)))


# --------------------------------------------------------------------------
# The plan: each distinct wire behaviour once


_ORDER = {"1.2": 0, "1.3": 1}


def _profile(c: Client, tls: str, cert: bool, *, pha: bool, renegotiation: bool, tag: str) -> Profile:
    instrument = (pha, renegotiation) != (c.pha, c.renegotiation)
    suffix = ("/pha" if tls == "1.3" else "/reneg") if instrument else ""
    return Profile(name=f"{c.id}/{tls}/{tag}{suffix}", kind=c.kind, user_agent=c.user_agent, cert=cert, tls=tls, pha=pha,
                   renegotiation=renegotiation, client=c.id, headers=c.headers, instrument=instrument,
                   note=c.label + ("; probe instrument: answers a per-directory request so that it is visible"
                                   if instrument else ""))


def plan(
    offered: Iterable[str],
    required_paths: Sequence[str] = (),
    *,
    trusted_cert: bool = False,
    clients: Sequence[Client] = CLIENTS,
    path: str = CN_PATH,
) -> List[Check]:
    """The probes that decide the promise, for the TLS versions the server ``offered``.

    The server decides whether to ask by User-Agent (and headers) and path;
    the client's stack decides only whether it can answer, and the TLS
    version only how it is asked. So each distinct wire behaviour once:

    * each browser User-Agent at the highest version it speaks, with a
      stack that answers renegotiation and PHA so that any request is
      visible; one browser User-Agent at every version;
    * each API User-Agent at the highest version it speaks, with a stack
      that can answer, presenting the trusted certificate when there is
      one; the reference API User-Agent (curl) at every version, and with a
      certificate from an unknown CA at every version, and once without a
      certificate;
    * the real stack of each kind of client that cannot answer, once per
      version (no PHA under TLS 1.3, no renegotiation under TLS 1.2);
    * each path that requires a certificate: the reference API User-Agent
      without one and with an untrusted one at every version, a browser
      User-Agent without one and the trusted certificate at the highest.
    """
    versions = sorted({v for v in offered if v in TLS_VERSIONS}, key=lambda v: _ORDER[v])
    if not versions:
        return []
    top = versions[-1]
    browsers = [c for c in clients if c.kind == BROWSER]
    apis = [c for c in clients if c.kind == API]
    cert = TRUSTED if trusted_cert else NOCERT
    ctag = "cert" if trusted_cert else "nocert"

    def highest(c: Client) -> Optional[str]:
        fit = [v for v in versions if _ORDER[v] <= _ORDER[c.max_tls]]
        return fit[-1] if fit else None

    def speaks(c: Client, tls: str) -> bool:
        return _ORDER[tls] <= _ORDER[c.max_tls]

    ref_browser = next((c for c in browsers if speaks(c, top)), browsers[0] if browsers else None)
    ref_api = next((c for c in apis if speaks(c, top) and c.pha and c.renegotiation), apis[0] if apis else None)
    checks: List[Check] = []
    for tls in versions:
        for c in browsers:
            if highest(c) == tls or (c is ref_browser and speaks(c, tls)):
                checks.append(Check(R_BROWSER, _profile(c, tls, False, pha=True, renegotiation=True, tag="nocert"),
                                    path, NOCERT))
        for c in apis:
            if highest(c) == tls or (c is ref_api and speaks(c, tls)):
                checks.append(Check(R_API, _profile(c, tls, trusted_cert, pha=True, renegotiation=True, tag=ctag),
                                    path, cert))
        if ref_api is None or not speaks(ref_api, tls):
            continue
        checks.append(Check(R_UNTRUSTED, _profile(ref_api, tls, True, pha=True, renegotiation=True,
                                                  tag="untrusted"), path, UNTRUSTED))
        if trusted_cert and tls == top:
            checks.append(Check(R_API_NOCERT, _profile(ref_api, tls, False, pha=True, renegotiation=True,
                                                       tag="nocert"), path, NOCERT))
        unable = next((c for c in apis if speaks(c, tls) and not _can_answer(c, tls)), None)
        if unable is not None:
            checks.append(Check(R_EFFECT, _profile(unable, tls, trusted_cert, pha=unable.pha,
                                                   renegotiation=unable.renegotiation, tag=ctag), path, cert))
        for rp in required_paths:
            checks.append(Check(R_REQUIRED, _profile(ref_api, tls, False, pha=True, renegotiation=True,
                                                     tag="nocert"), rp, NOCERT))
            checks.append(Check(R_REQUIRED, _profile(ref_api, tls, True, pha=True, renegotiation=True,
                                                     tag="untrusted"), rp, UNTRUSTED))
            if tls == top and ref_browser is not None:
                checks.append(Check(R_REQUIRED, _profile(ref_browser, tls, False, pha=True, renegotiation=True,
                                                         tag="nocert"), rp, NOCERT))
            if tls == top and trusted_cert:
                checks.append(Check(R_REQUIRED_OK, _profile(ref_api, tls, True, pha=True, renegotiation=True,
                                                            tag="cert"), rp, TRUSTED))
    return checks


def _can_answer(c: Client, tls: str) -> bool:
    """Can this client's stack answer a per-directory certificate request under ``tls``?"""
    return c.pha if tls == "1.3" else c.renegotiation


def known_effects(offered: Iterable[str], clients: Sequence[Client] = CLIENTS,
                  mitigation: Optional[str] = None) -> List[Effect]:
    """The API clients that cannot use /cn under a per-directory policy, per TLS version offered."""
    out: List[Effect] = []
    offered = set(offered)
    mitigation = mitigation or tls12_opt_in()
    for c in clients:
        if c.kind != API:
            continue
        if "1.3" in offered and not c.pha and c.max_tls == "1.3":
            out.append(Effect(c.id, c.label, "1.3",
                              "no post-handshake auth: Apache answers 403 to every request on /cn (AH10158), "
                              "with or without a certificate",
                              mitigation + (f"; {GO_RENEGOTIATION}" if not c.renegotiation else "")))
        if "1.2" in offered and not c.renegotiation:
            out.append(Effect(c.id, c.label, "1.2",
                              "it refuses the renegotiation Apache starts to ask for the certificate: no answer "
                              "(AH02261)", GO_RENEGOTIATION))
    return out


# --------------------------------------------------------------------------
# The verdict


def _detail(r: ProbeResult) -> str:
    bits = [f"TLS {r.tls}" if r.tls else "no TLS handshake"]
    if r.status is not None:
        bits.append(str(r.status))
    if r.verified:
        bits.append(f"SSL_CLIENT_VERIFY={r.verified}")
    if r.diagnosis:
        bits.append(r.diagnosis)
    elif r.error:
        bits.append(r.error)
    return ", ".join(bits)


def _refused(r: ProbeResult) -> bool:
    """No usable answer: no HTTP response (the handshake was aborted) or 403."""
    return r.status is None or r.status == 403


def _who(s: Seen) -> str:
    return f"{s.check.profile.name} (User-Agent {s.check.profile.user_agent!r})"


def judge(
    mode: str,
    seen: Sequence[Seen],
    *,
    offered: Iterable[str] = TLS_VERSIONS,
    trusted_cert: bool = False,
    clients: Sequence[Client] = CLIENTS,
    mitigation: Optional[str] = None,
) -> Verdict:
    """The verdict on what the probes of `plan` saw (``mode``: `POLICY` after apply, `ORIGINAL` after revert).

    `POLICY`: the promise of the module docstring. `ORIGINAL` (a historical
    block, which asks browsers on purpose): API clients that can answer are
    asked and verified, an untrusted certificate is refused, and Internet
    Explorer 11 (not WebKit, asked by every historical block) is asked
    again; required paths are reported, not judged (the original block may
    itself open them, as the WebKit if/else variant did).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    offered = sorted(set(offered), key=lambda v: _ORDER.get(v, 9))
    problems: List[str] = []
    warnings: List[str] = []
    rows = [s for s in seen if s.result.skipped is None]
    by_role: Dict[str, List[Seen]] = {role: [s for s in rows if s.check.role == role] for role in ROLES}
    reachable = any(s.result.tls is not None for s in rows)
    if not rows or not reachable:
        why = next((s.result.error for s in rows if s.result.error), "nothing probed")
        return Verdict(False, mode, f"server not reachable ({why})", (f"no TLS handshake with the server: {why}",),
                       reachable=False)

    # Browsers on /cn.
    asked_browsers: List[str] = []
    for s in by_role[R_BROWSER]:
        r = s.result
        if r.tls is None:
            problems.append(f"{_who(s)}: inconclusive, no TLS handshake ({r.error})")
            asked_browsers.append(s.check.name)
        elif r.cert_requested:
            asked_browsers.append(s.check.name)
            if mode == POLICY:
                problems.append(f"{_who(s)} was asked for a client certificate on {s.check.path} ({r.how}): "
                                "the policy never asks browsers")
        elif not r.works and mode == POLICY:
            warnings.append(f"{_who(s)}: {r.outcome} on {s.check.path} ({_detail(r)})")
    if not by_role[R_BROWSER]:
        problems.append("no browser User-Agent was probed")
    if mode == ORIGINAL:
        ie = [s for s in by_role[R_BROWSER] if s.check.profile.client == "browser-ie11-win7"]
        if ie and not any(s.result.cert_requested for s in ie):
            problems.append("browser-ie11-win7 not asked, but every original block asks it: the original "
                            "behaviour is not back")

    # API clients on /cn.
    api_failed: List[str] = []
    for s in by_role[R_API]:
        r = s.result
        if not r.cert_requested:
            api_failed.append(s.check.name)
            problems.append(f"{_who(s)} was not asked for a client certificate on {s.check.path} "
                            f"({_detail(r)}): API clients able to answer must be asked")
        elif trusted_cert and not r.authenticated:
            api_failed.append(s.check.name)
            problems.append(f"{_who(s)} presented a trusted certificate on {s.check.path} and was not verified "
                            f"({_detail(r)})")
        elif not trusted_cert and not r.works:
            api_failed.append(s.check.name)
            problems.append(f"{_who(s)} was asked on {s.check.path} and got no answer ({_detail(r)})")
    if not by_role[R_API]:
        problems.append("no API User-Agent was probed")
    for s in by_role[R_API_NOCERT]:
        if not (s.result.cert_requested and s.result.works):
            warnings.append(f"{_who(s)} without a certificate on {s.check.path}: {s.result.outcome} "
                            f"({_detail(s.result)})")
    for s in by_role[R_UNTRUSTED]:
        r = s.result
        if r.cert_requested and r.cert_sent and not _refused(r):
            problems.append(f"{_who(s)} presented a certificate from an untrusted CA on {s.check.path} and was "
                            f"answered ({_detail(r)}): it must be refused")
    if not trusted_cert:
        warnings.append("no trusted client certificate configured: API clients were checked for being asked, "
                        "not for being verified (set DATAONE_CN_SSLVERIFY_CLIENT_CERT)")

    # Paths that require a certificate.
    opened: List[str] = []
    for s in by_role[R_REQUIRED]:
        r = s.result
        if not _refused(r):
            what = "an untrusted certificate" if s.check.cert == UNTRUSTED else "no certificate"
            msg = (f"{s.check.path} requires a client certificate, but answered {_who(s)} with {what} "
                   f"({_detail(r)})")
            if mode == POLICY:
                opened.append(s.check.path)
                problems.append(msg)
            else:
                warnings.append(msg)
    for s in by_role[R_REQUIRED_OK]:
        if not s.result.authenticated:
            warnings.append(f"{s.check.path} with a trusted certificate: {s.result.outcome} ({_detail(s.result)})")

    # Known effects of a per-directory policy.
    effects: List[Effect] = []
    if mode == POLICY:
        eff_rows = {s.check.profile.tls: s for s in by_role[R_EFFECT]}
        asked_api = {s.check.profile.client for s in by_role[R_API] if s.result.cert_requested}
        for e in known_effects(offered, clients, mitigation):
            if e.client not in asked_api:
                continue  # not asked at all: reported above as a problem, not an effect
            row = eff_rows.get(e.tls)
            effects.append(replace(e, confirmed=None if row is None else not row.result.works))
        for s in eff_rows.values():
            if s.result.works and s.result.cert_requested:
                warnings.append(f"{_who(s)}: expected to fail on /cn, answered ({_detail(s.result)})")

    n_b, n_a = len(by_role[R_BROWSER]), len(by_role[R_API])
    if mode == POLICY:
        parts = [f"browsers asked ({', '.join(asked_browsers)})" if asked_browsers else f"no browser asked ({n_b} probes)"]
    else:
        parts = [f"{len(asked_browsers)} of {n_b} browser probes asked"]
    verb = "asked and verified" if trusted_cert else "asked"
    parts.append(f"API clients not {verb} ({', '.join(api_failed)})" if api_failed
                 else f"API clients {verb} ({n_a} probes)")
    if by_role[R_UNTRUSTED]:
        bad = [s for s in by_role[R_UNTRUSTED] if not _refused(s.result)]
        parts.append("untrusted certificate answered" if bad else "untrusted certificate refused")
    req_paths = sorted({s.check.path for s in by_role[R_REQUIRED]})
    if req_paths:
        parts.append(f"{', '.join(sorted(set(opened)))} open without a valid certificate" if opened
                     else f"{', '.join(req_paths)} still require a certificate")
    if effects:
        parts.append(f"known effect: {len({e.client for e in effects})} API client families cannot use /cn")
    return Verdict(not problems, mode, "; ".join(parts), tuple(problems), tuple(warnings), tuple(effects))
