"""Where the live check connects, and what it must see after apply and revert.

The gate asserts the policy's promise from the client matrix of `probe`,
not "same as before".
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from . import apachectl, policy, probe

IE11_ROW = "browser-ie11-win7/1.2/nocert"


def probe_target(a: policy.Assessment) -> Tuple[str, int, str]:
    """(host, port, SNI) to reach the vhost from this host: its own address and ServerName."""
    host, port = "127.0.0.1", 443
    for addr in a.addresses:
        h, _, p = addr.rpartition(":") if not addr.endswith("]") else (addr, "", "")
        if not h:
            h, p = addr, ""
        if p.isdigit():
            port = int(p)
        if h not in ("*", "_default_", ""):
            host = h.strip("[]")
        break
    if host == "127.0.0.1":  # a wildcard vhost: go where Apache really listens on that port
        listening = apachectl.listening_addresses(port)
        if listening and "127.0.0.1" not in listening:
            host = listening[0]
    sni = (a.server_name or host).split(":")[0]
    return host, port, sni


def gate(op: str, before: Optional[List[probe.ProbeResult]], after: List[probe.ProbeResult]) -> Tuple[bool, str]:
    """Did the live server behave as the change intends? (the client matrix of `probe`)

    After ``apply``: `probe.gate_apply` -- no browser row asked, and every API
    row that worked before the change still works.
    After ``revert``: the original behaviour is back: API rows that worked
    still work, and IE11 (not WebKit, so asked by every historical variant)
    is asked again.
    """
    if op == "apply":
        v = probe.gate_apply(before, after)
        return v.ok, v.summary if v.ok else "; ".join(v.problems)
    v = probe.gate_apply(before, after, browsers_unasked=False)
    problems = list(v.problems)
    ie = next((r for r in after if r.name == IE11_ROW), None)
    if ie is not None and not ie.cert_requested and not ie.skipped:
        problems.append(f"{IE11_ROW} not asked, but every original block asks it: {ie.error or 'no request'}")
    if problems:
        return False, "; ".join(problems)
    return True, "browser (IE11) asked, API clients asked: original behaviour back"
