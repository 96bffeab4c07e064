"""The ``dataone-cn-sslverify`` command: argument parsing, output, exit codes.

Exit codes (design.md): 0 done or nothing to do; 1 failed, previous config
restored and active; 2 refused, nothing changed; 3 failed and could not
fully restore; 4 no CN SSL vhost found, nothing changed.

Human output goes to stderr one line per step; ``--json`` prints exactly
one JSON document on stdout. ``diff`` prints the diff itself on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, List, Optional

from . import __version__
from . import apacheconf as ac
from . import apachectl, locate, paths, policy

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_UNRESTORED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


class Output:
    """Human lines on stderr, or one JSON document on stdout."""

    def __init__(self, as_json: bool, verbose: bool) -> None:
        self.as_json = as_json
        self.verbose = verbose

    def line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def debug(self, text: str) -> None:
        if self.verbose:
            self.line(text)

    def document(self, doc: Dict[str, Any]) -> None:
        if self.as_json:
            json.dump(doc, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")


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


def cmd_status(args: argparse.Namespace, out: Output) -> int:
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
        for w in a.warnings:
            out.line(f"  warning: {w}")
    if not vhosts:
        out.line("vhost: no SSL vhost found")
    out.line(f"apache: {'running' if running else 'not running'}, config {'ok' if config_ok else 'FAILS configtest'}"
             + (f" ({loc.config_error})" if loc.config_error else ""))
    out.debug(f"found through: {loc.source}")
    out.document({
        "vhosts": [_vhost_doc(vf, a) for vf, a in vhosts],
        "apache": {"running": running, "config_ok": config_ok, "confdir": apachectl.confdir()},
        "policy": paths.policy_path(),
        "source": loc.source,
    })
    return EXIT_OK if loc.candidates() else EXIT_NOT_FOUND


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    loc = locate.locate(args.vhost, paths.policy_path())
    a = locate.choose(loc)
    text = ac.decode(loc.file_of(a).data)
    patch = policy.plan_apply(text, a, paths.policy_path())
    diff = policy.unified_diff(a.filename, text, patch.apply_to(text)) if patch else ""
    if patch is None:
        out.line(f"diff: {a.filename}:{a.line}: {a.state_label}, nothing to do")
    else:
        out.line(f"diff: {a.filename}: lines {patch.first_line}-{patch.last_line} ({a.state_label}) would be replaced")
    if out.as_json:
        out.document({"file": a.filename, "state": a.state_label, "changed": patch is not None, "diff": diff})
    else:
        sys.stdout.write(diff)
        sys.stdout.flush()
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "status": cmd_status,
    "diff": cmd_diff,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dataone-cn-sslverify",
        description="Stop asking browsers for an X.509 client certificate on a DataONE CN's /cn; keep asking API clients.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--vhost", metavar="FILE", help="the vhost file to act on (default: found from what Apache loads)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--verbose", "-v", action="store_true", help="say more")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("status", help="each SSL vhost Apache loads and the state of its block")
    sub.add_parser("diff", help="the unified diff `apply` would make; writes nothing")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are refusals (2), --help is 0
        return int(exc.code or 0)
    out = Output(args.json, args.verbose)
    try:
        return COMMANDS[args.command](args, out)
    except locate.NotFound as exc:
        out.line(f"error: {exc}")
        out.document({"result": "not-found", "error": str(exc)})
        return EXIT_NOT_FOUND
    except (ac.ConfigSyntaxError, policy.PolicyError, FileNotFoundError) as exc:
        out.line(f"refused: {exc}")
        out.document({"result": "refused", "error": str(exc)})
        return EXIT_REFUSED
