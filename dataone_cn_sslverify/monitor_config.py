"""What the configuration says, for ``monitor``: hazards, replication Locations, who is asked on /cn.

Reads every file Apache loads (`loaded.expand_config`) and asks `hazards`
its questions; no network. The cost grows with the configuration, so
`monitor_observe.configuration` caches the result while no loaded file
changed.
"""

import os
from typing import Dict, List, Optional, Tuple

from . import apachectl, clients, hazards, policy, scope
from .loaded import expand_config
from .monitor import HazardSeen, Replication


def _own(items: List[scope.Scoped], key: str) -> Optional[scope.Scoped]:
    own = [s for s in items if s.entry.key == key and s.vhost_level and not s.server]
    return own[-1] if own else None


def tls12_only_intended(items: List[scope.Scoped]) -> bool:
    """The vhost's own ``SSLProtocol`` (the policy snippet's TLS 1.2 opt-in, or inline) leaves TLS 1.3 out."""
    s = _own(items, "sslprotocol")
    return s is not None and "TLSv1.3" not in scope.parse_ssl_protocol(s.entry.args)


_PHASE = {"directory": 0, "directorymatch": 0, "files": 1, "filesmatch": 1, "proxy": 2, "proxymatch": 2,
          "location": 2, "locationmatch": 2, "if": 3, "elseif": 3, "else": 3}


def _phase(s: scope.Scoped) -> int:
    """Apache merges per-directory sections by kind: Directory, Files, Location, then If (as `scope.asked_on`)."""
    for c in s.rel:
        if c.key in _PHASE:
            return _PHASE[c.key]
    return -1


def verify_on(items: List[scope.Scoped], path: str, user_agent: str) -> Tuple[str, Optional[scope.Scoped]]:
    """The SSLVerifyClient in force on ``path`` for ``user_agent``, and the directive that decides it."""
    mode, by = scope.vhost_verify(items)
    for s in sorted(items, key=_phase):
        if s.entry.key != "sslverifyclient" or s.vhost_level:
            continue
        if scope.applies(s.rel, path, user_agent) is False:
            continue
        mode, by = (s.entry.args[0].lower() if s.entry.args else "none"), s
    return mode, by


#: Clients a `require` Location must refuse without a certificate: a browser, an API client, no User-Agent.
_REPLICATION_UAS = (clients.BROWSER_USER_AGENTS[1][1], hazards.API_UAS[0][1] if hazards.API_UAS else "curl/7.88.1", "")


def replication(items: List[scope.Scoped]) -> List[Replication]:
    """Every ``<Location>`` of the vhost that says ``SSLVerifyClient require``, and whether anything overrides it."""
    out: List[Replication] = []
    seen = set()
    for s in items:
        if s.entry.key != "sslverifyclient" or s.server or s.vhost_level:
            continue
        if (s.entry.args[0].lower() if s.entry.args else "") != "require":
            continue
        locs = [c for c in s.rel if c.key == "location" and c.args]
        if not locs or any(c.key in ("if", "elseif", "else") for c in s.rel) or locs[-1].args[0] in seen:
            continue
        path = locs[-1].args[0]
        seen.add(path)
        bad: Optional[scope.Scoped] = None
        for ua in _REPLICATION_UAS:
            mode, by = verify_on(items, path, ua)
            if mode != "require" and by is not None:
                bad = by
                break
        by_text = (f"`SSLVerifyClient {' '.join(bad.entry.args)}` at {bad.entry.where} overrides it"
                   if bad is not None else "")
        out.append(Replication(path, s.entry.where, bad is not None, by_text, bad.entry.file if bad else ""))
    return out


def analyse(a: policy.Assessment, snippet: str, config_ok: Optional[bool], config_error: str) -> Dict[str, object]:
    """Hazards, replication and who is asked on /cn, from the files Apache loads (no network)."""
    confdir = apachectl.confdir()
    file = os.path.realpath(a.filename)
    view = expand_config(os.path.join(confdir, "apache2.conf"), confdir, env=dict(os.environ))
    if not scope.has_vhost(view, file, a.line):
        view = expand_config(a.filename, confdir, env=dict(os.environ))
    items = scope.scoped(view, file, a.line)
    inc = a.block.snippet if a.state == "applied" and a.block is not None and a.block.snippet else None
    pattern = a.block.pattern if a.block is not None else None
    found = hazards.evaluate(view, file, a.line, pattern=pattern, snippet=inc, configtest_ok=config_ok,
                             configtest_error=config_error)
    seen = tuple(HazardSeen(h.id, h.title, h.where, h.fix) for h in found if h.severity == hazards.HAZARD)
    browsers = [ua for _, ua in clients.BROWSER_USER_AGENTS]
    apis = [ua for _, ua in hazards.API_UAS]
    return {
        "hazards": seen,
        "replication": tuple(replication(items)),
        "tls12_only_intended": tls12_only_intended(items),
        "browsers_asked": sum(1 for ua in browsers if scope.asked_on(items, scope.CN_SAMPLE_PATH, ua)[0]),
        "browsers_total": len(browsers),
        "api_asked": sum(1 for ua in apis if scope.asked_on(items, scope.CN_SAMPLE_PATH, ua)[0]),
        "api_total": len(apis),
    }
