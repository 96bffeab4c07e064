"""`check`: configuration hazards that break clients of the CN vhost.

Each hazard says what breaks, for which clients, where in the configuration,
and the fix. The checks (docs/facts.md, "What Apache does with a per-directory
SSLVerifyClient"; measurements in README "Client compatibility"):

``tls13-no-pha``
    TLS 1.3 is negotiable on the vhost while client authentication is
    per-directory (``<Location>``/``<If>``): Apache then needs post-handshake
    authentication, and answers **403** (AH10158) to every client that does
    not offer it -- with ``optional`` too, with or without a certificate.
    Names the client families that will get 403 (from `clients.CLIENTS`).
``http2``
    HTTP/2 negotiable on the vhost (``Protocols h2`` in the vhost or the
    server config, mod_http2 loaded): a per-directory renegotiation or PHA
    is forbidden on HTTP/2 and mod_http2 resets the stream
    (HTTP_1_1_REQUIRED).
``reneg-buffer``
    ``SSLRenegBufferSize`` missing or below 10 MB on ``/cn``: mod_ssl
    buffers the request body while it asks for the certificate (TLS 1.2
    and 1.3 alike, measured); the default 131072 bytes makes larger uploads
    fail with 413.
``configtest``
    The configuration already fails ``apache2ctl configtest``.
``browser-pattern``
    A browser family of a built-in list of real User-Agent strings
    (`clients.BROWSER_USER_AGENTS`) would be asked for a certificate on ``/cn``.

Notes (reported, exit status unaffected): API clients the pattern exempts
(they can no longer authenticate with a certificate on ``/cn``), clients
that refuse TLS 1.2 renegotiation (Go's default), the TLS 1.2 mitigation
when it is active.

Layout: `loaded.expand_config` turns the files Apache loads into a flat list
of directives with their enclosing sections; `scope` says what of it
applies to the CN vhost, on which path, for which client; the rules here
(`evaluate`) compute the hazards from that view, the CN vhost's assessment
and optional live measurements -- pure; `checkrun` is the thin edge
(locate, configtest, ``apache2ctl -S``, a few TLS handshakes).

Exit status of ``check``: 0 clean, `ExitCode.HAZARD` (5) at least one
hazard; it still exits 4 when there is no CN vhost and 2 on bad input.
"""

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import policy
from .clients import API, BROWSER, BROWSER_USER_AGENTS, CLIENTS, Client
from .errors import ExitCode
from .loaded import ConfigView, norm_module
from .scope import (CN_SAMPLE_PATH, Scoped, applies, asked_on, effective_tls, http2_protocols, path_of,
                    per_dir_verify, reneg_buffer, scoped, ua_conditional, verify_mode)
from .records import dataclass

if TYPE_CHECKING:
    from .probe import Handshake


HAZARD = "hazard"
NOTE = "note"

#: mod_ssl's default request-body buffer for a renegotiation, and what a CN needs.
RENEG_BUFFER_DEFAULT = 131072
RENEG_BUFFER_MIN = 10_000_000


#: Real browser User-Agent strings, by family: ``check`` reports every family
#: API client User-Agents (from the client catalogue): the pattern should not exempt them.
API_UAS: Tuple[Tuple[str, str], ...] = tuple((c.label, c.user_agent) for c in CLIENTS if c.kind == API)

# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Hazard:
    """One finding of ``check``.

    ``id``: a stable identifier (``tls13-no-pha``, ``http2``, ``reneg-buffer``,
    ``configtest``, ``browser-pattern``, ``api-exempted``,
    ``tls12-no-renegotiation``, ``tls13-disabled``). ``severity``: ``hazard``
    (makes ``check`` exit 5) or ``note``. ``clients``: the client families
    affected. ``evidence``: what was read or measured.
    """

    id: str
    severity: str
    title: str
    breaks: str
    fix: str
    where: str = ""
    clients: Tuple[str, ...] = ()
    evidence: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id, "severity": self.severity, "title": self.title, "breaks": self.breaks, "fix": self.fix,
            "where": self.where, "clients": list(self.clients), "evidence": list(self.evidence),
        }


# --------------------------------------------------------------------------
# The hazards (pure)


@dataclass
class Live:
    """What the edge measured against the running vhost (None: not measured)."""

    target: str = ""
    tls13: Optional["Handshake"] = None
    tls12: Optional["Handshake"] = None
    alpn: Optional["Handshake"] = None
    default_vhost: Optional[bool] = None  # is the CN vhost the default one for its address:port?

    def to_json(self) -> Dict[str, Any]:
        def hs(h: Optional["Handshake"]) -> Optional[Dict[str, Any]]:
            return None if h is None else {"ok": h.ok, "tls": h.tls, "alpn": h.alpn, "error": h.error}
        return {"target": self.target, "tls1.3": hs(self.tls13), "tls1.2": hs(self.tls12), "alpn": hs(self.alpn),
                "default_vhost": self.default_vhost}


def _names(clients: Iterable[Client]) -> Tuple[str, ...]:
    return tuple(c.label for c in clients)


def _mitigation_fix(snippet: Optional[str], vhost_file: str) -> str:
    from . import paths
    from .snippet import TLS12_OPT_IN  # the one wording of the opt-in (docs/policy.md)
    where = TLS12_OPT_IN.format(conffile=paths.policy_path())
    if not snippet:
        where += (f"; or add `SSLProtocol -all +TLSv1.2` inside this vhost in {vhost_file}, then "
                  "`apache2ctl configtest && apache2ctl graceful`")
    return (f"Opt in to TLS 1.2 for this vhost: {where}. Measured on Apache 2.4: it takes effect for clients sending "
            "the vhost's name (SNI) whether or not it is the default vhost of its address. Trade-off: the CN vhost "
            "loses TLS 1.3; clients that refuse renegotiation (Go by default) still fail on /cn")


def check_configtest(ok: Optional[bool], error: str = "") -> List[Hazard]:
    if ok is None or ok:
        return []
    return [Hazard(
        "configtest", HAZARD, "the Apache configuration already fails `apache2ctl configtest`",
        breaks="a reload or restart would fail; `apply`/`revert` refuse to run on a broken configuration",
        fix="fix the error Apache reports, then run `apache2ctl configtest` again",
        where=error, evidence=(error,) if error else (),
    )]


def check_tls13(items: Sequence[Scoped], vhost_file: str, snippet: Optional[str], live: Optional[Live],
                clients: Sequence[Client] = CLIENTS) -> List[Hazard]:
    versions, decided = effective_tls(items)
    evidence = [decided]
    negotiable = "1.3" in versions
    if live is not None and live.tls13 is not None:
        evidence.append(f"measured: a TLS 1.3 handshake with {live.target} "
                        + ("succeeded" if live.tls13.ok else f"failed ({live.tls13.error})"))
        negotiable = live.tls13.ok
    dirs = per_dir_verify(items)
    out: List[Hazard] = []
    if not dirs:
        return out
    if not negotiable:
        tls12_ok = "1.2" in versions if (live is None or live.tls12 is None) else live.tls12.ok
        if tls12_ok:
            note = ("clients without post-handshake auth are asked by a TLS 1.2 renegotiation instead "
                    "(Java works, with or without a certificate)")
            if live is not None and live.default_vhost is False:
                note += ("; clients that send no SNI land on the default vhost of this address and get "
                         "421 Misdirected Request for this name (measured; they did before too)")
            out.append(Hazard("tls13-disabled", NOTE, "TLS 1.3 is not negotiable on this vhost", breaks=note,
                              fix="nothing to do", where=decided, evidence=tuple(evidence)))
        return out
    no_pha = [c for c in clients if not c.pha and c.max_tls == "1.3"]
    affected: List[Client] = []
    paths: List[str] = []
    for s in dirs:
        path = path_of(s)
        probe_path = CN_SAMPLE_PATH if path in ("/cn", "/cn/", "(every path)") else path
        fams = []
        for c in no_pha:
            if c.kind == BROWSER and not ua_conditional(s):
                continue  # an unconditional `require` is for API clients (replication): browsers are not its users
            if applies(s.rel, probe_path, c.user_agent) is not False:
                fams.append(c)
        if fams:
            paths.append(f"{path} (SSLVerifyClient {verify_mode(s)}, {s.entry.where}): "
                         + ", ".join(c.label for c in fams))
            affected += [c for c in fams if c not in affected]
    if not affected:
        return out
    out.append(Hazard(
        "tls13-no-pha", HAZARD,
        "TLS 1.3 is negotiable while client authentication is per-directory",
        breaks=("under TLS 1.3 Apache can only ask after the request by post-handshake authentication; "
                "clients that do not offer it get 403 (AH10158), with `optional` too and with or without a "
                "certificate: " + "; ".join(paths)),
        fix=_mitigation_fix(snippet, vhost_file),
        where=decided, clients=_names(affected), evidence=tuple(evidence),
    ))
    return out


def check_tls12_renegotiation(items: Sequence[Scoped], live: Optional[Live],
                              clients: Sequence[Client] = CLIENTS) -> List[Hazard]:
    versions, decided = effective_tls(items)
    if live is not None and live.tls12 is not None:
        ok12 = live.tls12.ok
    else:
        ok12 = "1.2" in versions
    if not ok12:
        return []
    fams = []
    where = ""
    for s in per_dir_verify(items):
        path = path_of(s)
        probe_path = CN_SAMPLE_PATH if path in ("/cn", "/cn/", "(every path)") else path
        for c in clients:
            if c.kind == API and not c.renegotiation and applies(s.rel, probe_path, c.user_agent) is not False:
                if c not in fams:
                    fams.append(c)
                    where = where or s.entry.where
    if not fams:
        return []
    return [Hazard(
        "tls12-no-renegotiation", NOTE, "API clients that refuse renegotiation cannot use /cn under TLS 1.2",
        breaks="Apache asks by a renegotiation after the request; these clients refuse it and get no answer (AH02261)",
        fix="Go clients: set tls.Config{Renegotiation: tls.RenegotiateOnceAsClient} (and MaxVersion TLS 1.2 "
            "while TLS 1.3 would need post-handshake auth), or send a User-Agent the pattern exempts",
        where=where, clients=_names(fams),
    )]


def check_http2(items: Sequence[Scoped], modules_loaded: bool, live: Optional[Live]) -> List[Hazard]:
    protos, s = http2_protocols(items)
    static = modules_loaded and "h2" in protos
    evidence = [f"{s.entry.where}: Protocols {' '.join(s.entry.args)}" + (" (main server)" if s.server else "")
                if s else "no Protocols directive: http/1.1 only"]
    evidence.append("mod_http2 loaded" if modules_loaded else "mod_http2 not loaded")
    on = static
    if live is not None and live.alpn is not None and live.alpn.ok:
        evidence.append(f"measured: offering ALPN h2 to {live.target}, the server chose {live.alpn.alpn or 'none'}")
        on = live.alpn.alpn == "h2"
    if not on or not per_dir_verify(items):
        return []
    return [Hazard(
        "http2", HAZARD, "HTTP/2 is enabled on the CN vhost",
        breaks=("a per-directory certificate request is impossible on HTTP/2: mod_http2 resets the stream with "
                "HTTP_1_1_REQUIRED; only clients that retry over HTTP/1.1 (curl does) reach /cn"),
        fix="add `Protocols http/1.1` inside the CN vhost (or `a2dismod http2` if nothing else needs it), "
            "then `apache2ctl configtest && apache2ctl graceful`",
        where=s.entry.where if s else "", evidence=tuple(evidence),
    )]


def check_reneg_buffer(items: Sequence[Scoped]) -> List[Hazard]:
    cn_dirs = [s for s in per_dir_verify(items) if applies(s.rel, CN_SAMPLE_PATH, "") is not False]
    if not cn_dirs:
        return []
    size, s = reneg_buffer(items)
    if size is not None and size >= RENEG_BUFFER_MIN:
        return []
    what = (f"SSLRenegBufferSize {size} ({s.entry.where}) is below {RENEG_BUFFER_MIN}" if size is not None
            else f"no SSLRenegBufferSize on /cn: mod_ssl's default {RENEG_BUFFER_DEFAULT} bytes applies")
    return [Hazard(
        "reneg-buffer", HAZARD, "the request-body buffer for the certificate request on /cn is too small",
        breaks=(f"{what}; mod_ssl buffers the request body while it asks for the certificate (TLS 1.2 "
                "renegotiation and TLS 1.3 post-handshake alike): larger uploads to /cn fail with 413"),
        fix=f"inside the CN vhost: <Location /cn> SSLRenegBufferSize {RENEG_BUFFER_MIN} </Location>",
        where=s.entry.where if s else cn_dirs[0].entry.where,
    )]


def _pattern_in_config(items: Sequence[Scoped]) -> Optional[str]:
    """The User-Agent regex of the first ``<If>`` around a per-directory SSLVerifyClient, if any."""
    for s in per_dir_verify(items):
        for c in s.rel:
            for expr in ((c.argstr,) if c.key != "else" else ()) + c.prev:
                cond = policy.parse_ua_condition(expr)
                if cond is not None:
                    return cond.regex
    return None


def check_browser_pattern(items: Sequence[Scoped], pattern: Optional[str], snippet: Optional[str],
                          vhost_file: str) -> List[Hazard]:
    out: List[Hazard] = []
    asked = []
    for fam, ua in BROWSER_USER_AGENTS:
        yes, how = asked_on(items, CN_SAMPLE_PATH, ua)
        if yes:
            asked.append((fam, how))
    if pattern is None:
        pattern = _pattern_in_config(items)
    shown = f"/{pattern}/" if pattern else "(none)"
    where = snippet or vhost_file
    if asked:
        out.append(Hazard(
            "browser-pattern", HAZARD, "browsers are asked for a client certificate on /cn",
            breaks=(f"the browser pattern {shown} does not exempt: " + ", ".join(f"{f} ({h})" for f, h in asked)
                    + ". Under TLS 1.2 IE refuses the renegotiation (XMLHttpRequest Network Error 0x4c7) and other "
                    "browsers show a certificate chooser; under TLS 1.3 browsers without post-handshake auth get 403"),
            fix=(f"make the pattern match them (keep {'|'.join(policy.BROWSER_WORDS)}) in {where}"
                 if snippet else "`dataone-cn-sslverify apply` (the policy's pattern exempts every browser family)"),
            where=where, clients=tuple(f for f, _ in asked),
        ))
    exempt = [label for label, ua in API_UAS if not asked_on(items, CN_SAMPLE_PATH, ua)[0]]
    if exempt and per_dir_verify(items):
        out.append(Hazard(
            "api-exempted", NOTE, "API clients the pattern exempts are never asked for a certificate on /cn",
            breaks=f"the pattern {shown} also matches: " + ", ".join(exempt)
                   + "; they can no longer authenticate with an X.509 certificate there",
            fix="deliberate (Member Nodes exempt httr|julia|python) or narrow the pattern in " + where,
            where=where, clients=tuple(exempt),
        ))
    return out


def evaluate(
    view: ConfigView,
    vhost_file: str,
    vhost_line: int,
    *,
    pattern: Optional[str] = None,
    snippet: Optional[str] = None,
    configtest_ok: Optional[bool] = None,
    configtest_error: str = "",
    live: Optional[Live] = None,
) -> List[Hazard]:
    """Every hazard and note for the CN vhost at ``vhost_file:vhost_line`` (pure)."""
    items = scoped(view, vhost_file, vhost_line)
    http2_loaded = any(norm_module(m) == "http2" for m in view.modules)
    out: List[Hazard] = []
    out += check_configtest(configtest_ok, configtest_error)
    out += check_tls13(items, vhost_file, snippet, live)
    out += check_http2(items, http2_loaded, live)
    out += check_reneg_buffer(items)
    out += check_browser_pattern(items, pattern, snippet, vhost_file)
    out += check_tls12_renegotiation(items, live)
    return out


def exit_code(hazards: Sequence[Hazard]) -> int:
    """0 when no finding is a hazard (notes do not count), else `ExitCode.HAZARD`."""
    return ExitCode.HAZARD if any(h.severity == HAZARD for h in hazards) else 0


__all__ = [
    "HAZARD", "NOTE", "API_UAS", "Hazard", "Live", "check_configtest", "check_tls13", "check_http2",
    "check_reneg_buffer", "check_browser_pattern", "check_tls12_renegotiation", "evaluate", "exit_code",
]
