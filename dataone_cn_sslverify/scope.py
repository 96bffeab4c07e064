"""What of the loaded configuration applies to the CN vhost, on which path, for which client (pure).

Apache's merge semantics as far as ``check`` and the live gate need them:
which directives reach the CN vhost (its own, then the main server's),
which TLS versions it enables (``SSLProtocol`` arithmetic and
``SSLOpenSSLConfCmd``), whether a per-directory section applies to a path
and a User-Agent (``<Location>``, ``<LocationMatch>``, ``<If>``/``<Else>``
on the User-Agent), the order sections merge in (Directory, Files,
Location, then If: the last applicable ``SSLVerifyClient`` wins), and the
paths that require a client certificate. Input is `loaded.ConfigView`.
"""

import re
from typing import List, Optional, Sequence, Set, Tuple

from . import policy
from .loaded import ConfigView, Ctx, Entry
from .records import dataclass

#: A request path the CN REST API serves (what "/cn" means for coverage tests).
CN_SAMPLE_PATH = "/cn/v2/object"

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


def last_in_force(items: Sequence[Scoped], key: str) -> Optional[Scoped]:
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
    sp = last_in_force(items, "sslprotocol")
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


def verify_mode(s: Scoped) -> str:
    return (s.entry.args[0].lower() if s.entry.args else "none")


def vhost_verify(items: Sequence[Scoped]) -> Tuple[str, Optional[Scoped]]:
    """The vhost-level SSLVerifyClient (decides the initial handshake)."""
    s = last_in_force(items, "sslverifyclient")
    return (verify_mode(s) if s else "none"), s


def per_dir_verify(items: Sequence[Scoped]) -> List[Scoped]:
    """SSLVerifyClient in a per-directory context that asks more than the vhost level does."""
    base, _ = vhost_verify(items)
    out = []
    for s in items:
        if s.entry.key != "sslverifyclient" or s.vhost_level:
            continue
        if not any(c.key in _PER_DIR for c in s.rel):
            continue
        mode = verify_mode(s)
        if mode != "none" and mode != base:
            out.append(s)
    return out


_PHASE = {"directory": 0, "directorymatch": 0, "files": 1, "filesmatch": 1, "proxy": 2, "proxymatch": 2,
          "location": 2, "locationmatch": 2, "if": 3, "elseif": 3, "else": 3}


def merge_phase(s: Scoped) -> int:
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
    for s in sorted(items, key=merge_phase):
        if s.entry.key != "sslverifyclient" or s.vhost_level:
            continue
        a = applies(s.rel, path, user_agent)
        if a is False:
            continue
        mode, how = verify_mode(s), "per-directory"
    return mode != "none", how


def path_of(s: Scoped) -> str:
    for c in reversed(s.rel):
        if c.key in ("location", "locationmatch", "directory", "directorymatch") and c.args:
            return c.args[0]
    return "(every path)"


def ua_conditional(s: Scoped) -> bool:
    return any(c.key in ("if", "elseif", "else") for c in s.rel)


def reneg_buffer(items: Sequence[Scoped], path: str = CN_SAMPLE_PATH) -> Tuple[Optional[int], Optional[Scoped]]:
    """The SSLRenegBufferSize in force on ``path`` (None: not set, mod_ssl's 131072 applies)."""
    found: Optional[Scoped] = None
    for s in sorted(items, key=merge_phase):
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
    s = last_in_force(items, "protocols")
    if s is None:
        return ["http/1.1"], None
    return [a.lower() for a in s.entry.args], s



_REGEX_META = re.compile(r"[\\.^$*+?()\[\]{}|]")


def sample_path(c: Ctx) -> Optional[str]:
    """A concrete request path a ``<Location>``/``<LocationMatch>`` applies to, or None when none can be told.

    ``<Location>``: its path (a glob or ``~`` regex gives None).
    ``<LocationMatch>``: the literal prefix of an anchored regex, if the regex matches it.
    """
    if not c.args:
        return None
    if c.key == "location" and len(c.args) == 1 and not any(ch in c.args[0] for ch in "*?["):
        return c.args[0]
    if c.key in ("locationmatch", "location"):
        rx = c.args[-1]
        if not rx.startswith("^"):
            return None
        m = _REGEX_META.search(rx, 1)
        prefix = rx[1:m.start()] if m else rx[1:]
        try:
            ok = prefix.startswith("/") and re.search(rx, prefix) is not None
        except re.error:
            return None
        return prefix if ok else None
    return None


def required_paths(items: Sequence[Scoped]) -> Tuple[List[str], List[str]]:
    """Paths of the vhost whose ``<Location>`` requires a client certificate, and those that cannot be probed.

    Found from the configuration as loaded (replication on a CN): every
    ``SSLVerifyClient require`` inside a ``<Location>``/``<LocationMatch>``
    of the vhost. The second list names the sections no concrete path can
    be derived from (file:line).
    """
    paths: List[str] = []
    unknown: List[str] = []
    for s in items:
        if s.server or s.entry.key != "sslverifyclient" or verify_mode(s) != "require":
            continue
        locs = [c for c in s.rel if c.key in ("location", "locationmatch")]
        if not locs:
            continue
        p = sample_path(locs[-1])
        if p is None:
            unknown.append(f"{locs[-1].file}:{locs[-1].line}")
        elif p not in paths:
            paths.append(p)
    return paths, unknown


__all__ = [
    "CN_SAMPLE_PATH", "Scoped", "vhost_index", "scoped", "has_vhost", "last_in_force", "parse_ssl_protocol",
    "effective_tls", "applies", "verify_mode", "vhost_verify", "per_dir_verify", "merge_phase", "asked_on",
    "path_of", "ua_conditional", "reneg_buffer", "http2_protocols", "sample_path", "required_paths",
]
