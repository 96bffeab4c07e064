"""The ``status`` command: each SSL vhost Apache loads, Apache, the policy file and its live copy, the opt-out, drift and backups.

Lines for a person through the command's output (`cli.Output`), and the same
facts as one JSON document with ``--json``.
"""

import argparse
import os
from typing import TYPE_CHECKING, Any, Dict

from . import apachectl, display, hoststate, locate, optout, paths, policy, snippet
from .errors import ExitCode
from .loaded import default_read
from .store import Store

if TYPE_CHECKING:  # pragma: no cover
    from .cli import Output


def _vhost_doc(vf: locate.VhostFile, a: policy.Assessment) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "file": a.filename,
        "loaded_as": vf.path,
        "line": a.line,
        "server_name": a.server_name,
        "addresses": a.addresses,
        "state": a.state_label,
        "variant": a.variant,
        "block": ({"first_line": a.block.first_line, "last_line": a.block.last_line} if a.block else None),
        "reason": a.reason,
        "warnings": a.warnings,
    }
    if a.block is not None and a.block.pattern:
        doc["pattern"] = a.block.pattern
    return doc


def cmd_status(args: argparse.Namespace, out: "Output") -> int:
    loc = locate.locate(args.vhost, paths.policy_path())
    running = apachectl.is_running()
    config_ok = loc.config_ok if loc.config_ok is not None else apachectl.configtest().ok
    vhosts = [(vf, a) for vf in loc.files for a in vf.assessments]
    for vf, a in vhosts:
        shown = a.filename if vf.path == a.filename else f"{a.filename} (loaded as {vf.path})"
        blk = f", block lines {a.block.first_line}-{a.block.last_line}" if a.block else ""
        out.line(f"vhost: {shown}:{a.line} {a.server_name or '-'} {' '.join(a.addresses)}: {a.state_label}{blk}")
        if a.reason and a.state != "absent":
            out.line(f"  reason: {a.reason}")
            for ln in display.point_at_non_ascii(f"{a.filename}:{a.line} {a.reason}"):
                out.line(f"  {ln}")
        for w in a.warnings:
            out.line(f"  warning: {w}")
    if not vhosts:
        out.line("vhost: no SSL vhost found")
    if not loc.candidates():
        out.line("error: no CN SSL vhost found: no SSL vhost Apache loads carries a client-verification block"
                 + (" (use --vhost FILE to name one)" if not args.vhost else ""))
    out.line(f"apache: {'running' if running else 'not running'}, config {'ok' if config_ok else 'FAILS configtest'}"
             + (f" ({loc.config_error})" if loc.config_error else ""))
    out.debug(f"found through: {loc.source}")
    pol = _policy_doc(included=any(a.state == "applied" for _, a in vhosts))
    out.line(f"policy: {pol['file']} -> {pol['live']}: {pol['status']}")
    store = Store(paths.state_dir())
    opted = optout.read(paths.state_dir())
    if opted is not None:
        out.line(f"package: {opted.describe()}; run `dataone-cn-sslverify apply` to manage it again")
    notes = [hoststate.drift(a, store, opted) for _, a in vhosts]
    if not config_ok and not any(a.state in ("applied", "superseded") for _, a in vhosts):
        notes.append(hoststate.broken_line(apachectl.configtest().first_error))
    notes = [n for n in notes if n]
    for n in notes:
        out.line(n)
    backups = store.backups()
    out.line(f"backups: {len(backups)} in {paths.state_dir()}" + (f", newest {backups[0].id}" if backups else ""))
    out.document({
        "vhosts": [_vhost_doc(vf, a) for vf, a in vhosts],
        "optout": opted.to_json() if opted is not None else None,
        "notes": notes,
        "apache": {"running": running, "config_ok": config_ok, "confdir": apachectl.confdir()},
        "policy": pol,
        "source": loc.source,
        "backups": [b.to_json() for b in backups],
    })
    return ExitCode.OK if loc.candidates() else ExitCode.NOT_FOUND


def _policy_doc(included: bool) -> Dict[str, Any]:
    """The policy file, its live copy, and whether they agree (`snippet.describe`).

    ``included``: a vhost Apache loads carries the managed Include (state
    ``applied``). Without one (after a ``revert``, before the first
    ``apply``), the copy is on disk but Apache does not load it: "live" would
    say the opposite of the truth.
    """
    conffile, live = paths.policy_path(), paths.live_path()
    status = snippet.status_line(conffile, default_read(conffile), default_read(live),
                                 default_read(os.path.join(paths.state_dir(), "rejected.json")))
    if not included and status.startswith("live"):
        status = "not included: no vhost Apache loads includes the live copy (the policy is not applied)"
    return {"file": conffile, "live": live, "status": status, "included": included}
