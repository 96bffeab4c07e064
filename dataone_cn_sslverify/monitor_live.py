"""``monitor --live``: the policy's promise measured on the wire, with a cached verdict.

A few distinct behaviours, not the whole matrix (it runs every minute): a
browser that refuses renegotiation (IE11, TLS 1.2) and a browser offering
post-handshake auth (TLS 1.3) must not be asked on ``/cn``; an API client
must be asked under each TLS version it can be asked in; a client without a
certificate must be refused on every Location that requires one
(replication); and, when the policy opts into TLS 1.2 only, a TLS 1.3
handshake must fail.

The verdict is cached in the state dir (``monitor-live.json``, written and
read back by `monitor_cache`) for ``ttl`` seconds, keyed by the bytes of
the vhost and the policy snippet and the target, so a changed
configuration is probed again at once; it is used only if every field has
its type, it was not measured in the future and is not older than the TTL.
"""

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import monitor_cache
from .monitor import LiveSeen, Observations, Replication

if TYPE_CHECKING:
    from . import policy
from .store import sha256

CACHE_NAME = "monitor-live.json"
CACHE_VERSION = 1
DEFAULT_TTL = 300.0
#: Clock skew tolerated for a cache written "in the future".
SKEW = 5.0

BROWSER_ROWS = ("browser-ie11-win7/1.2/nocert", "browser-chrome/1.3/nocert/pha")
API_ROWS = ("api-curl/1.2/nocert", "api-curl/1.3/nocert")
REPLICATION_ROW = "api-curl/1.3/nocert"


def cache_key(vhost_bytes: bytes, snippet_bytes: bytes, paths: Sequence[str]) -> str:
    """What a live verdict is valid for: the vhost's and the snippet's bytes, the Locations probed."""
    return sha256(json.dumps([sha256(vhost_bytes), sha256(snippet_bytes), sorted(paths)]).encode())


# ----------------------------------------------------------------------------
# Measuring


def measure(host: str, port: int, sni: str, replication_paths: Sequence[str], tls12_only: bool,
            timeout: float = 5.0) -> LiveSeen:
    """Probe the few behaviours (concurrently, through `probe.probe_matrix`)."""
    from . import clients, probe  # the network edge: only with --live

    target = f"{host}:{port} (SNI {sni})"
    rows = [clients.get_profile(n) for n in BROWSER_ROWS + API_ROWS]
    cn = probe.probe_matrix(host, port, sni, "/cn/", rows, timeout=timeout)
    probed = [r for r in cn if r.skipped is None]
    if not any(r.tls is not None for r in probed):
        errs = sorted({r.error or "no TLS handshake" for r in probed})
        return LiveSeen(target=target, error="; ".join(errs)[:300] or "no TLS handshake")
    browsers = [r for r in probed if r.kind == clients.BROWSER]
    apis = [r for r in probed if r.kind == clients.API]
    asked = tuple(r.name for r in browsers if r.cert_requested
                  or (r.tls == "1.3" and not r.profile.pha and r.status == 403))
    not_asked = tuple(r.name for r in apis if not r.cert_requested)
    rep_profile = clients.get_profile(REPLICATION_ROW)
    open_paths: List[str] = []
    for path in replication_paths:
        r = probe.probe_matrix(host, port, sni, path, [rep_profile], timeout=timeout)[0]
        if r.skipped is None and r.status is not None and r.status != 403:
            open_paths.append(f"{path} ({r.status})")
    tls13 = tls12_only and probe.handshake(host, port, sni, tls="1.3", timeout=timeout).ok
    return LiveSeen(target=target, browsers_probed=len(browsers), browsers_asked=asked, api_probed=len(apis),
                    api_not_asked=not_asked, replication_open=tuple(open_paths), tls13_despite_optin=tls13)


# ----------------------------------------------------------------------------
# The cache


def _to_doc(seen: LiveSeen, key: str, now: float) -> Dict[str, Any]:
    return {"version": CACHE_VERSION, "key": key, "measured": now, "target": seen.target, "error": seen.error,
            "browsers_probed": seen.browsers_probed, "browsers_asked": list(seen.browsers_asked),
            "api_probed": seen.api_probed, "api_not_asked": list(seen.api_not_asked),
            "replication_open": list(seen.replication_open), "tls13_despite_optin": seen.tls13_despite_optin}


def _strs(x: Any) -> Tuple[str, ...]:
    if not isinstance(x, list) or len(x) > 64 or not all(isinstance(s, str) and len(s) < 400 for s in x):
        raise ValueError("bad list")
    return tuple(x)


def _from_doc(doc: Any, key: str, now: float, ttl: float) -> Optional[LiveSeen]:
    """The cached verdict if it is valid for ``key`` and fresh; None otherwise (never raises)."""
    try:
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or doc.get("key") != key:
            return None
        measured = doc["measured"]
        if not isinstance(measured, (int, float)) or isinstance(measured, bool):
            return None
        age = now - float(measured)
        if age < -SKEW or age > ttl:
            return None
        ints = [doc["browsers_probed"], doc["api_probed"]]
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1000 for i in ints):
            return None
        target, error, tls13 = doc["target"], doc["error"], doc["tls13_despite_optin"]
        if not isinstance(tls13, bool):
            return None
        if not isinstance(target, str) or not isinstance(error, str) or len(target) > 400 or len(error) > 400:
            return None
        return LiveSeen(target=target, error=error, browsers_probed=ints[0], api_probed=ints[1],
                        browsers_asked=_strs(doc["browsers_asked"]), api_not_asked=_strs(doc["api_not_asked"]),
                        replication_open=_strs(doc["replication_open"]), tls13_despite_optin=tls13,
                        age=max(0.0, age))
    except (KeyError, ValueError, TypeError):
        return None


def read_cache(state_dir: str, key: str, ttl: float, now: Optional[float] = None) -> Optional[LiveSeen]:
    if ttl <= 0:
        return None
    doc = monitor_cache.read_doc(state_dir, CACHE_NAME, CACHE_VERSION, key)
    return None if doc is None else _from_doc(doc, key, time.time() if now is None else now, ttl)


def write_cache(state_dir: str, seen: LiveSeen, key: str, now: Optional[float] = None) -> bool:
    """Store the verdict (see `monitor_cache`); False when the state dir is not ours."""
    return monitor_cache.write_doc(state_dir, CACHE_NAME, _to_doc(seen, key, time.time() if now is None else now))


def live(state_dir: str, key: str, ttl: float, target: Callable[[], Tuple[str, int, str]],
         replications: Sequence[Replication], tls12_only: bool, timeout: float = 5.0) -> LiveSeen:
    """The cached verdict when fresh, else a new measurement (cached unless the server was unreachable).

    ``target`` gives (host, port, SNI); it is only called to measure (it imports the transaction's helpers).
    """
    cached = read_cache(state_dir, key, ttl)
    if cached is not None:
        return cached
    host, port, sni = target()
    seen = measure(host, port, sni, [r.path for r in replications], tls12_only, timeout)
    if ttl > 0 and not seen.error:
        write_cache(state_dir, seen, key)
    return seen


def _bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def observe(obs: Observations, a: "policy.Assessment", state_dir: str, snippet: str, ttl: float,
            timeout: float = 5.0) -> Observations:
    """``obs`` with the live verdict of the CN vhost ``a`` (cached, or measured now)."""
    def target() -> Tuple[str, int, str]:
        from .livecheck import probe_target  # imports the probe stack: only when measuring
        return probe_target(a)

    key = cache_key(_bytes(a.filename), _bytes(snippet), [r.path for r in obs.replication])
    seen = live(state_dir, key, ttl, target, obs.replication, obs.tls12_only_intended, timeout=timeout)
    return obs._replace(live=seen)
