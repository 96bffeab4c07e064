"""`check`: configuration hazards that break clients of the CN vhost.

Each hazard says what breaks, for which clients, where in the configuration,
and the fix. The checks (cn-facts.md, "What Apache does with a per-directory
SSLVerifyClient"; measurements in README "Client compatibility"):

``tls13-no-pha``
    TLS 1.3 is negotiable on the vhost while client authentication is
    per-directory (``<Location>``/``<If>``): Apache then needs post-handshake
    authentication, and answers **403** (AH10158) to every client that does
    not offer it -- with ``optional`` too, with or without a certificate.
    Names the client families that will get 403 (from `probe.CLIENTS`).
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
    (`BROWSER_UAS`) would be asked for a certificate on ``/cn``.

Notes (reported, exit status unaffected): API clients the pattern exempts
(they can no longer authenticate with a certificate on ``/cn``), clients
that refuse TLS 1.2 renegotiation (Go's default), the TLS 1.2 mitigation
when it is active.

Layout: `loaded.expand_config` turns the files Apache loads into a flat list
of directives with their enclosing sections (Include expanded, ``IfModule`` /
``IfDefine`` evaluated) -- pure given a ``read`` function; the queries here
say what of it applies to the CN vhost, on which path, for which client;
`evaluate` computes the hazards from that view, the CN vhost's assessment and
optional live measurements -- pure; `run_check` is the thin edge (locate,
configtest, ``apache2ctl -S``, a few TLS handshakes).

Exit status of ``check`` (`EXIT_HAZARD`): 0 clean, 5 at least one hazard.
5 because design.md gives 1-4 other meanings (1 "failed, restored", 2
"refused", 3 "could not restore", 4 "no CN vhost"); ``check`` still exits 4
when there is no CN vhost and 2 on bad input.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from . import apacheconf as ac
from . import clients as catalogue  # the pure client catalogue: the network edge (probe) only in run_check
from . import policy
from .loaded import ConfigView, Ctx, Entry, default_read, expand_config, module_names, norm_module  # re-exported

if TYPE_CHECKING:  # annotations only (quoted): importing probe loads ssl and threads
    from . import probe

EXIT_HAZARD = 5

HAZARD = "hazard"
NOTE = "note"

#: mod_ssl's default request-body buffer for a renegotiation, and what a CN needs.
RENEG_BUFFER_DEFAULT = 131072
RENEG_BUFFER_MIN = 10_000_000

#: A request path the CN REST API serves (what "/cn" means for coverage tests).
CN_SAMPLE_PATH = "/cn/v2/object"

#: Real browser User-Agent strings, by family: ``check`` reports every family
#: the configured pattern does not exempt on /cn.
BROWSER_UAS: Tuple[Tuple[str, str], ...] = (
    ("Internet Explorer 10 (Windows 7)", "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; WOW64; Trident/6.0)"),
    ("Internet Explorer 11 (Windows 7)", "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"),
    ("Internet Explorer 11 (Windows 10)", "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko"),
    ("Edge Legacy (EdgeHTML)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                               "Chrome/70.0.3538.102 Safari/537.36 Edge/18.18363"),
    ("Edge (Chromium)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91"),
    ("Chrome (Windows)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.0.0 Safari/537.36"),
    ("Chrome (macOS)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/120.0.0.0 Safari/537.36"),
    ("Chrome (Linux)", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/120.0.0.0 Safari/537.36"),
    ("Chrome (Android)", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.0.0 Mobile Safari/537.36"),
    ("Chrome (iOS)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                     "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1"),
    ("Firefox (Windows)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Firefox (macOS)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Firefox (Linux)", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Firefox (Android)", "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0"),
    ("Safari (macOS)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                       "Version/17.1 Safari/605.1.15"),
    ("Safari (iOS)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                     "Version/17.1 Mobile/15E148 Safari/604.1"),
    ("Safari (iPadOS)", "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                        "Version/17.1 Mobile/15E148 Safari/604.1"),
    ("Samsung Internet", "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"),
    ("Opera (Chromium)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0"),
    ("Opera Presto (legacy)", "Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18"),
)

#: API client User-Agents (from the probe's client catalogue): the pattern should not exempt them.
API_UAS: Tuple[Tuple[str, str], ...] = tuple((c.label, c.user_agent) for c in catalogue.CLIENTS if c.kind == catalogue.API)


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
# Queries over the view (pure)

_PER_DIR = ("location", "locationmatch", "directory", "directorymatch", "files", "filesmatch", "if", "elseif", "else",
            "proxy", "proxymatch")


def vhost_index(ctx: Sequence[Ctx], file: str, line: int) -> Optional[int]:
    """Position of the CN vhost's ``<VirtualHost>`` in a context chain, or None."""
    for i, c in enumerate(ctx):
        if c.key == "virtualhost" and c.file == file and c.line == line:
            return i
    return None


@dataclass(frozen=True)
class Scoped:
    """A directive that applies to the CN vhost: ``rel`` is its context inside the vhost."""

    entry: Entry
    rel: Tuple[Ctx, ...]
    server: bool  # from the main server config (inherited), not the vhost itself

    @property
    def vhost_level(self) -> bool:
        return not self.rel


def scoped(view: ConfigView, file: str, line: int) -> List[Scoped]:
    """Directives that apply to the vhost at ``file:line``: the main server's, then the vhost's own."""
    out: List[Scoped] = []
    for e in view.entries:
        if any(c.key == "virtualhost" for c in e.ctx):
            i = vhost_index(e.ctx, file, line)
            if i is not None:
                out.append(Scoped(e, e.ctx[i + 1:], server=False))
        else:
            out.append(Scoped(e, e.ctx, server=True))
    return out


def has_vhost(view: ConfigView, file: str, line: int) -> bool:
    return any(vhost_index(e.ctx, file, line) is not None for e in view.entries)


def _last(items: Sequence[Scoped], key: str) -> Optional[Scoped]:
    """The directive in force at vhost level: the vhost's own last one, else the server's."""
    own = [s for s in items if s.entry.key == key and s.vhost_level and not s.server]
    if own:
        return own[-1]
    srv = [s for s in items if s.entry.key == key and s.vhost_level and s.server]
    return srv[-1] if srv else None


_PROTOCOLS = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_TLS_OF = {"TLSv1.2": "1.2", "TLSv1.3": "1.3"}


def parse_ssl_protocol(args: Sequence[str], base: Optional[Set[str]] = None) -> Set[str]:
    """mod_ssl's ``SSLProtocol`` arithmetic: a bare name resets, ``+``/``-`` add or remove."""
    cur: Set[str] = set(base or ())
    for raw in args:
        action = raw[0] if raw[:1] in "+-" else ""
        word = raw[1:] if action else raw
        lw = word.lower()
        if lw == "all":
            this = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
        else:
            this = {p for p in _PROTOCOLS if p.lower() == lw}
        if action == "-":
            cur -= this
        elif action == "+":
            cur |= this
        else:
            cur = set(this)  # a name without +/- replaces what was set before (mod_ssl warns)
    return cur


def _conf_cmd_protocols(items: Sequence[Scoped], current: Set[str]) -> Tuple[Set[str], List[str]]:
    """Apply ``SSLOpenSSLConfCmd MinProtocol|MaxProtocol|Protocol`` in force on the vhost."""
    order = list(_PROTOCOLS)
    evidence: List[str] = []
    own = [s for s in items if s.entry.key == "sslopensslconfcmd" and s.vhost_level and not s.server]
    srv = [s for s in items if s.entry.key == "sslopensslconfcmd" and s.vhost_level and s.server]
    cur = set(current)
    for s in (own or srv):
        if len(s.entry.args) < 2:
            continue
        cmd, val = s.entry.args[0].lower(), s.entry.args[1]
        if cmd in ("maxprotocol", "minprotocol") and val in order:
            idx = order.index(val)
            keep = order[: idx + 1] if cmd == "maxprotocol" else order[idx:]
            cur &= set(keep)
            evidence.append(f"{s.entry.where}: SSLOpenSSLConfCmd {s.entry.args[0]} {val}")
        elif cmd == "protocol":
            cur = parse_ssl_protocol(val.replace(",", " ").split(), cur)
            evidence.append(f"{s.entry.where}: SSLOpenSSLConfCmd Protocol {val}")
    return cur, evidence


def effective_tls(items: Sequence[Scoped]) -> Tuple[Set[str], str]:
    """TLS versions ("1.2", "1.3") the vhost's configuration enables, and where that is decided."""
    sp = _last(items, "sslprotocol")
    if sp is not None:
        protos = parse_ssl_protocol(sp.entry.args)
        where = f"{sp.entry.where}: SSLProtocol {' '.join(sp.entry.args)}" + (" (main server)" if sp.server else "")
    else:
        protos = {"TLSv1.2", "TLSv1.3"}
        where = "no SSLProtocol: mod_ssl's default enables TLS 1.3"
    protos, ev = _conf_cmd_protocols(items, protos)
    if ev:
        where += "; " + "; ".join(ev)
    return {_TLS_OF[p] for p in protos if p in _TLS_OF}, where


def _location_covers(c: Ctx, path: str) -> Optional[bool]:
    """Does this per-dir context apply to ``path``? None when it cannot be told (Directory, Files...)."""
    if c.key == "location" and c.args:
        loc = c.args[0]
        if loc == "/" or path == loc or path.startswith(loc.rstrip("/") + "/"):
            return True
        return False
    if c.key == "locationmatch" and c.args:
        try:
            return re.search(c.args[0], path) is not None
        except re.error:
            return None
    if c.key in ("if", "elseif", "else"):
        return True
    return None


def _cond_holds(argstr: str, user_agent: str) -> Optional[bool]:
    """Does an ``<If>`` expression hold for a client sending ``user_agent``? None if it is not about the UA."""
    cond = policy.parse_ua_condition(argstr)
    if cond is None:
        return None
    try:
        rx = re.compile(cond.regex, re.I if cond.case_insensitive else 0)
    except re.error:
        return None
    return bool(rx.search(user_agent)) != cond.negated


def applies(rel: Sequence[Ctx], path: str, user_agent: str) -> Optional[bool]:
    """Does a directive in context ``rel`` (inside the vhost) apply to ``path`` requested by ``user_agent``?

    None when a condition cannot be evaluated (not a User-Agent match, a
    ``<Directory>``...): the caller decides what unknown means.
    """
    unknown = False
    for c in rel:
        if c.key in ("if", "elseif", "else"):
            for p in c.prev:  # an Else/ElseIf applies only when the earlier conditions did not hold
                h = _cond_holds(p, user_agent)
                if h is True:
                    return False
                if h is None:
                    unknown = True
            if c.key != "else":
                h = _cond_holds(c.argstr, user_agent)
                if h is False:
                    return False
                if h is None:
                    unknown = True
        else:
            cov = _location_covers(c, path)
            if cov is False:
                return False
            if cov is None:
                unknown = True
    return None if unknown else True


def _verify_mode(s: Scoped) -> str:
    return (s.entry.args[0].lower() if s.entry.args else "none")


def vhost_verify(items: Sequence[Scoped]) -> Tuple[str, Optional[Scoped]]:
    """The vhost-level SSLVerifyClient (decides the initial handshake)."""
    s = _last(items, "sslverifyclient")
    return (_verify_mode(s) if s else "none"), s


def per_dir_verify(items: Sequence[Scoped]) -> List[Scoped]:
    """SSLVerifyClient in a per-directory context that asks more than the vhost level does."""
    base, _ = vhost_verify(items)
    out = []
    for s in items:
        if s.entry.key != "sslverifyclient" or s.vhost_level:
            continue
        if not any(c.key in _PER_DIR for c in s.rel):
            continue
        mode = _verify_mode(s)
        if mode != "none" and mode != base:
            out.append(s)
    return out


_PHASE = {"directory": 0, "directorymatch": 0, "files": 1, "filesmatch": 1, "proxy": 2, "proxymatch": 2,
          "location": 2, "locationmatch": 2, "if": 3, "elseif": 3, "else": 3}


def _merge_phase(s: Scoped) -> int:
    """Apache merges per-directory sections by kind: Directory, Files, Location, then If (outermost decides)."""
    for c in s.rel:
        if c.key in _PHASE:
            return _PHASE[c.key]
    return -1


def asked_on(items: Sequence[Scoped], path: str, user_agent: str) -> Tuple[bool, str]:
    """Is a client with ``user_agent`` asked for a certificate on ``path``? And how (``handshake``/``per-directory``).

    The last applicable SSLVerifyClient wins (sections merge after the
    vhost level, in file order); an undecidable condition counts as asking.
    """
    base, _ = vhost_verify(items)
    mode, how = base, "handshake"
    for s in sorted(items, key=_merge_phase):
        if s.entry.key != "sslverifyclient" or s.vhost_level:
            continue
        a = applies(s.rel, path, user_agent)
        if a is False:
            continue
        mode, how = _verify_mode(s), "per-directory"
    return mode != "none", how


def _path_of(s: Scoped) -> str:
    for c in reversed(s.rel):
        if c.key in ("location", "locationmatch", "directory", "directorymatch") and c.args:
            return c.args[0]
    return "(every path)"


def _ua_conditional(s: Scoped) -> bool:
    return any(c.key in ("if", "elseif", "else") for c in s.rel)


def reneg_buffer(items: Sequence[Scoped], path: str = CN_SAMPLE_PATH) -> Tuple[Optional[int], Optional[Scoped]]:
    """The SSLRenegBufferSize in force on ``path`` (None: not set, mod_ssl's 131072 applies)."""
    found: Optional[Scoped] = None
    for s in sorted(items, key=_merge_phase):
        if s.entry.key != "sslrenegbuffersize":
            continue
        if s.vhost_level or applies(s.rel, path, "") is True:
            found = s
    if found is None:
        return None, None
    try:
        return int(found.entry.args[0]), found
    except (IndexError, ValueError):
        return None, found


def http2_protocols(items: Sequence[Scoped]) -> Tuple[List[str], Optional[Scoped]]:
    """The ``Protocols`` list in force on the vhost (default ``http/1.1``)."""
    s = _last(items, "protocols")
    if s is None:
        return ["http/1.1"], None
    return [a.lower() for a in s.entry.args], s


# --------------------------------------------------------------------------
# The hazards (pure)


@dataclass
class Live:
    """What the edge measured against the running vhost (None: not measured)."""

    target: str = ""
    tls13: Optional["probe.Handshake"] = None
    tls12: Optional["probe.Handshake"] = None
    alpn: Optional["probe.Handshake"] = None
    default_vhost: Optional[bool] = None  # is the CN vhost the default one for its address:port?

    def to_json(self) -> Dict[str, Any]:
        def hs(h: Optional["probe.Handshake"]) -> Optional[Dict[str, Any]]:
            return None if h is None else {"ok": h.ok, "tls": h.tls, "alpn": h.alpn, "error": h.error}
        return {"target": self.target, "tls1.3": hs(self.tls13), "tls1.2": hs(self.tls12), "alpn": hs(self.alpn),
                "default_vhost": self.default_vhost}


def _names(clients: Iterable[catalogue.Client]) -> Tuple[str, ...]:
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
                clients: Sequence[catalogue.Client] = catalogue.CLIENTS) -> List[Hazard]:
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
    affected: List[catalogue.Client] = []
    paths: List[str] = []
    for s in dirs:
        path = _path_of(s)
        probe_path = CN_SAMPLE_PATH if path in ("/cn", "/cn/", "(every path)") else path
        fams = []
        for c in no_pha:
            if c.kind == catalogue.BROWSER and not _ua_conditional(s):
                continue  # an unconditional `require` is for API clients (replication): browsers are not its users
            if applies(s.rel, probe_path, c.user_agent) is not False:
                fams.append(c)
        if fams:
            paths.append(f"{path} (SSLVerifyClient {_verify_mode(s)}, {s.entry.where}): "
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
                              clients: Sequence[catalogue.Client] = catalogue.CLIENTS) -> List[Hazard]:
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
        path = _path_of(s)
        probe_path = CN_SAMPLE_PATH if path in ("/cn", "/cn/", "(every path)") else path
        for c in clients:
            if c.kind == catalogue.API and not c.renegotiation and applies(s.rel, probe_path, c.user_agent) is not False:
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
    for fam, ua in BROWSER_UAS:
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
    """0 when no finding is a hazard (notes do not count), else `EXIT_HAZARD`."""
    return EXIT_HAZARD if any(h.severity == HAZARD for h in hazards) else 0


def parse_default_vhosts(output: str) -> Dict[str, Tuple[str, int]]:
    """``apache2ctl -S``: address -> (file, line) of its default vhost."""
    out: Dict[str, Tuple[str, int]] = {}
    addr = None
    for line in output.splitlines():
        m = re.match(r"^(\S+:\d+|\S+)\s+is a NameVirtualHost\s*$", line)
        if m:
            addr = m.group(1)
            continue
        m = re.match(r"^\s+default server \S+ \((.+):(\d+)\)\s*$", line)
        if m and addr:
            out[addr] = (m.group(1), int(m.group(2)))
            continue
        m = re.match(r"^(\S+:\d+)\s+\S+ \((.+):(\d+)\)\s*$", line)
        if m:
            out[m.group(1)] = (m.group(2), int(m.group(3)))
            addr = None
    return out


# --------------------------------------------------------------------------
# The edge


@dataclass
class Report:
    vhost: Dict[str, Any]
    hazards: List[Hazard]
    live: Optional[Live]
    problems: List[str]

    @property
    def exit_code(self) -> int:
        return exit_code(self.hazards)

    def to_json(self) -> Dict[str, Any]:
        return {
            "vhost": self.vhost,
            "clean": self.exit_code == 0,
            "exit_code": self.exit_code,
            "hazards": [h.to_json() for h in self.hazards],
            "live": self.live.to_json() if self.live else None,
            "problems": self.problems,
        }


def _snippet_pattern(path: str) -> Optional[str]:
    data = default_read(path)
    if data is None:
        return None
    try:
        return policy.snippet_pattern(ac.parse(data, path))
    except (ac.ConfigSyntaxError, policy.PolicyError):
        return None


def run_check(
    vhost: Optional[str] = None,
    snippet_path: str = policy.DEFAULT_SNIPPET,
    *,
    connect: Optional[Tuple[str, int]] = None,
    servername: Optional[str] = None,
    live: bool = True,
    timeout: float = 5.0,
) -> Report:
    """Locate the CN vhost, read what Apache loads, measure what is cheap to measure, evaluate.

    Raises `locate.NotFound` (no CN vhost) and `policy.PolicyError` (ambiguous) like the other commands.
    """
    from . import apachectl, locate, probe  # the edge only
    from .transaction import probe_target

    loc = locate.locate(vhost, snippet_path)
    a = locate.choose(loc)
    problems: List[str] = []
    ct = apachectl.configtest()
    confdir = apachectl.confdir()
    view = expand_config(os.path.join(confdir, "apache2.conf"), confdir, env=dict(os.environ))
    file = os.path.realpath(a.filename)
    if not has_vhost(view, file, a.line):
        problems.append(f"{a.filename}: not loaded by {confdir}/apache2.conf; main-server settings unknown")
        view = expand_config(a.filename, confdir, env=dict(os.environ))
    problems += view.problems
    snippet = None
    pattern = a.block.pattern if a.block is not None else None
    if a.state == "applied" and a.block is not None and a.block.snippet:
        snippet = a.block.snippet
        pattern = _snippet_pattern(snippet) or pattern
    measured: Optional[Live] = None
    running = apachectl.is_running()
    if live and (connect is not None or running):
        host, port, sni = probe_target(a)
        if connect is not None:
            host, port = connect
        sni = servername or sni
        measured = Live(target=f"{host}:{port} (SNI {sni})")
        measured.tls13 = probe.handshake(host, port, sni, tls="1.3", timeout=timeout)
        measured.tls12 = probe.handshake(host, port, sni, tls="1.2", timeout=timeout)
        measured.alpn = probe.handshake(host, port, sni, alpn=("h2", "http/1.1"), timeout=timeout)
        if not (measured.tls13.ok or measured.tls12.ok):
            problems.append(f"live check: no TLS handshake with {measured.target}: {measured.tls12.error}; "
                            "judging from the configuration only")
            measured = None
    if measured is not None:
        res = apachectl.run(["-S"])
        defaults = parse_default_vhosts(res.output) if res.ok else {}
        for addr in a.addresses:
            port = addr.rsplit(":", 1)[-1]
            for k, (f, ln) in defaults.items():
                if k.rsplit(":", 1)[-1] == port:
                    measured.default_vhost = (os.path.realpath(f) == file and ln == a.line)
    hazards = evaluate(view, file, a.line, pattern=pattern, snippet=snippet, configtest_ok=ct.ok,
                       configtest_error="" if ct.ok else ct.first_error, live=measured)
    info = {"file": a.filename, "line": a.line, "server_name": a.server_name, "state": a.state_label,
            "pattern": pattern, "snippet": snippet, "apache_running": running, "config_ok": ct.ok}
    return Report(info, hazards, measured, problems)


def format_report(report: Report) -> str:
    """The human output of ``check`` (one block per finding)."""
    v = report.vhost
    lines = [f"vhost: {v['file']}:{v['line']} {v.get('server_name') or '-'} ({v['state']})"]
    if not report.hazards:
        lines.append("check: no hazard found")
    for h in report.hazards:
        lines.append(f"{h.severity.upper()} [{h.id}] {h.title}")
        if h.where:
            lines.append(f"  where:   {h.where}")
        lines.append(f"  breaks:  {h.breaks}")
        if h.clients:
            lines.append(f"  clients: {', '.join(h.clients)}")
        lines.append(f"  fix:     {h.fix}")
        for e in h.evidence:
            lines.append(f"  seen:    {e}")
    for p in report.problems:
        lines.append(f"note: {p}")
    n = sum(1 for h in report.hazards if h.severity == HAZARD)
    lines.append(f"check: {n} hazard{'s' if n != 1 else ''}, exit {report.exit_code}")
    return "\n".join(lines) + "\n"


__all__ = [
    "EXIT_HAZARD", "HAZARD", "NOTE", "BROWSER_UAS", "API_UAS", "Hazard", "Ctx", "Entry", "ConfigView", "Scoped",
    "Live", "Report", "expand_config", "scoped", "has_vhost", "parse_ssl_protocol", "effective_tls", "applies",
    "asked_on", "per_dir_verify", "vhost_verify", "reneg_buffer", "http2_protocols", "check_configtest",
    "check_tls13", "check_http2", "check_reneg_buffer", "check_browser_pattern", "check_tls12_renegotiation",
    "evaluate", "exit_code", "parse_default_vhosts", "run_check", "format_report", "module_names", "norm_module",
]
