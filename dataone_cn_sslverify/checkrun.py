"""`check`, the edge: locate the CN vhost, read what Apache loads, measure what is cheap, evaluate.

The rules are in `hazards` (pure); this module runs ``apache2ctl``, reads
the configuration and makes a few TLS handshakes, then formats the report.
"""

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from . import apacheconf as ac
from . import policy
from .hazards import HAZARD, Hazard, Live, evaluate, exit_code
from .loaded import default_read, expand_config
from .scope import has_vhost
from .records import dataclass


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
    from .livecheck import probe_target

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


__all__ = ["Report", "parse_default_vhosts", "run_check", "format_report"]
