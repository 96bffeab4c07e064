"""The ``dataone-cn-sslverify`` command: output, exit codes (the parser is `cliargs`, ``status`` is `statusview`).

Exit codes are `errors.ExitCode` (docs/design.md, "Exit codes"); an error
reaches the operator through one mapping, `exit_code_of`. The global options
(``--vhost``, ``--json``, ``--verbose``) are accepted before and after the
command, because people type ``status --json``.

Human output goes to stderr one line per step; ``--json`` prints exactly
one JSON document on stdout. ``diff`` prints the diff itself on stdout.
"""

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import apacheconf as ac
from . import clients, display, locate, optout, paths, policy
from .cliargs import build_parser
from .errors import ExitCode, Refused, SslVerifyError
from .statusview import cmd_status
from .store import LockTimeout, Store


class _OnFirstUse:
    """A module imported when an attribute of it is first used.

    ``monitor`` runs every minute (Check_MK, Nagios) and must not pay for
    importing the probe stack (``ssl``, threads) or the transaction. Annotations
    that name its types are strings: without ``from __future__ import
    annotations`` (Python 3.6) a bare one would import it at definition.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module("." + self._name, __package__), attr)


transaction: Any = _OnFirstUse("transaction")


class Output:
    """Human lines on stderr, or one JSON document on stdout."""

    def __init__(self, as_json: bool, verbose: bool) -> None:
        self.as_json = as_json
        self.verbose = verbose

    def line(self, text: str) -> None:
        """One line for a person: control characters from config files shown escaped, never sent raw."""
        print(display.escape(text, keep_newlines=True), file=sys.stderr, flush=True)

    def debug(self, text: str) -> None:
        if self.verbose:
            self.line(text)

    def document(self, doc: Dict[str, Any]) -> None:
        if self.as_json:
            json.dump(doc, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")


def recover_first(out: Output) -> int:
    """Every command first finishes the story of a run that died (design: crash safety).

    Returns an exit code to stop with, or -1 to go on. A state dir we may not
    create (a non-root `status`) just means there is nothing to recover.
    """
    store = Store(paths.state_dir())
    if not os.path.exists(store.journal_path):
        return -1
    try:
        store.lock("recover", transaction.LOCK_TIMEOUT)
    except LockTimeout as exc:
        out.line(f"lock: {exc}")
        return ExitCode.REFUSED
    except OSError:
        return -1
    try:
        got = transaction.recover(store, lambda n, ok, d: out.line(f"{n}: {d}"))
    finally:
        store.unlock()
    if got is not None and got.result == "journal-unreadable":
        return -1  # said so above; read-only commands still work
    if got is not None and got.exit_code == ExitCode.UNRESTORED:
        out.document(got.to_json())
        return ExitCode.UNRESTORED
    return -1


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    loc = locate.locate(args.vhost, paths.policy_path())
    a = locate.choose(loc)
    text = ac.decode(loc.file_of(a).data)
    patch = policy.plan_apply(text, a, paths.live_path(), adopt=args.adopt)
    diff = policy.patch_diff(a.filename, text, patch) if patch else ""
    if patch is None:
        out.line(f"diff: {a.filename}:{a.line}: {a.state_label}, nothing to do")
    else:
        out.line(f"diff: {a.filename}: lines {patch.first_line}-{patch.last_line} ({a.state_label}) would be replaced")
    if out.as_json:
        out.document({"file": a.filename, "state": a.state_label, "changed": patch is not None, "diff": diff})
    else:
        sys.stdout.write(diff)
        sys.stdout.flush()
    return ExitCode.OK


def _run_transaction(op: str, args: argparse.Namespace, out: Output,
                     after: "Optional[Callable[[transaction.Outcome], None]]" = None, **kw: Any) -> int:
    def report(step: "transaction.Step") -> None:
        out.line(f"{step.name}: {'' if step.ok else 'FAILED: '}{step.detail}")

    t = transaction.Transaction(op, vhost=args.vhost, report=report, hold_signals=True, **kw)
    outcome = t.run()
    if after is not None and outcome.exit_code == ExitCode.OK:
        after(outcome)
    out.line(f"{op}: {outcome.result}: {outcome.message}")
    if outcome.exit_code == ExitCode.REFUSED:
        for ln in display.point_at_non_ascii(outcome.message):
            out.line(ln)
    out.document(outcome.to_json())
    return outcome.exit_code


def cmd_apply(args: argparse.Namespace, out: Output) -> int:
    def clear_optout(outcome: "transaction.Outcome") -> None:
        if optout.clear(paths.state_dir()):
            out.line("opt-out: cleared (the package applies the policy again on upgrades and triggers)")

    return _run_transaction("apply", args, out, after=clear_optout, reload=not args.no_reload,
                            do_probe=not args.no_probe, adopt=args.adopt)


def cmd_revert(args: argparse.Namespace, out: Output) -> int:
    """A revert by hand is the administrator's decision: record it, so the package never undoes it."""
    def record_optout(outcome: "transaction.Outcome") -> None:
        try:
            rec = optout.record(paths.state_dir(), outcome.file or args.vhost or "")
        except OSError as exc:
            out.line(f"opt-out: FAILED to record in {paths.state_dir()} ({exc}): an upgrade may apply the policy again")
            return
        out.line(f"opt-out: recorded, {rec.describe()}: upgrades and triggers leave this host alone until "
                 "`dataone-cn-sslverify apply`")

    return _run_transaction("revert", args, out, after=record_optout, reload=not args.no_reload,
                            do_probe=not args.no_probe)


def cmd_restore(args: argparse.Namespace, out: Output) -> int:
    return _run_transaction("restore", args, out, reload=not args.no_reload, backup_id=args.id)


def cmd_discard_journal(args: argparse.Namespace, out: Output) -> int:
    """Set an unreadable or untrusted journal aside (a copy is kept); changes no other file."""
    store = Store(paths.state_dir())
    store.lock("discard-journal", transaction.LOCK_TIMEOUT)
    try:
        kept = store.discard_journal()
    finally:
        store.unlock()
    if kept is None:
        out.line(f"discard-journal: no journal at {store.journal_path}: nothing to do")
    else:
        out.line(f"discard-journal: {store.journal_path} moved to {kept}; no other file was changed "
                 f"(check with `{display.command(['dataone-cn-sslverify', 'status'])}`)")
    out.document({"result": "discarded" if kept else "unchanged", "journal": store.journal_path, "kept": kept})
    return ExitCode.OK


def cmd_backups(args: argparse.Namespace, out: Output) -> int:
    backups = Store(paths.state_dir()).backups(args.vhost)
    for b in backups:
        out.line(f"{b.id}  {b.when}  {b.size:>7} bytes  sha256:{b.sha256[:16]}  {b.op:<7} {b.path}")
    if not backups:
        out.line(f"backups: none in {paths.state_dir()}")
    out.document({"backups": [b.to_json() for b in backups]})
    return ExitCode.OK


def _probe_target(args: argparse.Namespace) -> Tuple[str, int, str, Optional[policy.Assessment]]:
    """(host, port, SNI, the CN vhost's assessment or None when it cannot be located with --connect)."""
    a: Optional[policy.Assessment] = None
    if args.connect:
        host, _, port_s = args.connect.rpartition(":")
        if not host or not port_s.isdigit():
            raise Refused(f"--connect {args.connect}: expected HOST:PORT")
        try:
            a = locate.choose(locate.locate(args.vhost, paths.policy_path()))
        except (locate.NotFound, policy.PolicyError, ac.ConfigSyntaxError):
            a = None
        return host.strip("[]"), int(port_s), args.servername or host.strip("[]"), a
    a = locate.choose(locate.locate(args.vhost, paths.policy_path()))
    host, port, sni = transaction.probe_target(a)
    return host, port, args.servername or sni, a


def _probe_profiles(args: argparse.Namespace) -> Optional[List[clients.Profile]]:
    """Matrix rows to show besides the gate's probes: --profile names, or --client/--kind/--tls; None if none asked."""
    if args.profile:
        try:
            return [clients.get_profile(n) for n in args.profile]
        except KeyError as exc:
            raise Refused(f"--profile {exc.args[0]}: no such profile") from None
    if not (args.client or args.kind or args.tls):
        return None
    fams = list(clients.CLIENTS)
    if args.client:
        fams = [clients.get_client(c) for c in args.client]
    if args.kind:
        fams = [c for c in fams if c.kind == args.kind]
    certs = (False, True) if args.cert else (False,)
    return clients.matrix_profiles(fams, tuple(args.tls or clients.TLS_VERSIONS), certs,
                                   instruments=not args.no_instruments)


def _mode_of(a: Optional[policy.Assessment]) -> str:
    """What the live vhost promises: the policy unless it carries an original block."""
    from . import gate
    return gate.ORIGINAL if a is not None and a.state == "original" else gate.POLICY


def cmd_probe(args: argparse.Namespace, out: Output) -> int:
    """The live gate's probes and verdict against the vhost (table on stdout, or --json).

    The verdict is the one `apply` uses (`livecheck`): the policy's promise,
    or an original block's when the vhost carries one. Exit: 0 probed;
    6 (`ExitCode.UNREACHABLE`) the server could not be reached; 5
    (`ExitCode.HAZARD`, with ``--compare``) the verdict fails. ``--compare``
    also lists the rows whose outcome changed since the saved run.
    """
    from . import gate, livecheck, probe, results

    host, port, sni, a = _probe_target(args)
    before: Optional[Dict[str, Any]] = None
    if args.compare:
        try:
            with open(args.compare, encoding="utf-8") as f:
                before = json.load(f)
            results.results_from_json(before)
        except (OSError, ValueError) as exc:
            raise Refused(f"--compare {args.compare}: {exc}") from None
    notes: List[str] = []
    required: List[str] = []
    if a is not None:
        required, notes = livecheck.required_paths_of(a.filename, a.line)
    else:
        notes.append("the CN vhost could not be located: paths that require a certificate were not probed")
    if args.cert:
        trusted: Optional[Tuple[str, Optional[str]]] = (args.cert, args.key)
    else:
        trusted, cert_notes = livecheck.trusted_client_cert()
        notes += cert_notes
    live = livecheck.run(_mode_of(a), host, port, sni, required=required, trusted=trusted, notes=notes,
                         timeout=args.timeout, backend=args.backend)
    v = live.verdict
    rows = [s.result for s in live.seen]
    names = [s.check.name for s in live.seen]
    extra_rows: List[Any] = []
    profiles = _probe_profiles(args)
    if profiles is not None and v.reachable:
        extra_rows = probe.probe_matrix(host, port, sni, args.path, profiles, ca_file=args.cacert,
                                        client_cert=args.cert, client_key=args.key, timeout=args.timeout,
                                        backend=args.backend)
    changes: List[str] = []
    if before is not None:
        old = {str(r.get("name")): r.get("outcome") for r in before.get("profiles") or [] if isinstance(r, dict)}
        for s in live.seen:
            was = old.get(s.check.name) if s.check.name in old else old.get(s.result.name)
            if was is not None and was != s.result.outcome:
                changes.append(f"{s.check.name}: {was} -> {s.result.outcome}")
    if out.as_json:
        doc = {"profiles": [s.to_json() for s in live.seen], "verdict": live.to_json(),
               "target": {"host": host, "port": port, "servername": sni, "path": gate.CN_PATH}}
        if extra_rows:
            doc["matrix"] = [r.to_json() for r in extra_rows]
        if before is not None:
            doc["changes"] = changes
        out.document(doc)
    else:
        sys.stdout.write(results.format_table(rows, names))
        if extra_rows:
            sys.stdout.write("\n" + results.format_table(extra_rows))
        if args.verbose:
            sys.stdout.write(results.format_legend(rows + list(extra_rows)))
    out.line(f"probe: https://{sni}:{port}{gate.CN_PATH} via {host} ({v.mode}): {'ok' if v.ok else 'FAILS'}: {v.summary}")
    for p in v.problems:
        out.line(f"  problem: {p}")
    for e in v.effects:
        out.line(f"  known effect: {e.line()}")
    for m in v.mitigations:
        out.line(f"  mitigation: {m}")
    for w in v.warnings:
        out.line(f"  note: {w}")
    for c in changes:
        out.line(f"  changed since {args.compare}: {c}")
    if not v.reachable:
        return ExitCode.UNREACHABLE
    if before is not None and not v.ok:
        return ExitCode.HAZARD
    return ExitCode.OK


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    """Configuration hazards for the CN vhost. Exit 0 clean, 5 (`ExitCode.HAZARD`) when a hazard is found."""
    from . import checkrun

    connect = None
    if args.connect:
        host, _, port_s = args.connect.rpartition(":")
        if not host or not port_s.isdigit():
            raise Refused(f"--connect {args.connect}: expected HOST:PORT")
        connect = (host.strip("[]"), int(port_s))
    report = checkrun.run_check(args.vhost, paths.policy_path(), connect=connect, servername=args.servername,
                                live=not args.no_live, timeout=args.timeout)
    if out.as_json:
        out.document(report.to_json())
    else:
        sys.stdout.write(display.escape(checkrun.format_report(report), keep_newlines=True))
    return report.exit_code


def cmd_monitor(args: argparse.Namespace, out: Output) -> int:
    """One monitoring verdict (docs/monitoring.md); reads only: no lock beyond a read, no write, no reload.

    Exit: with ``--format nagios`` the plugin status (0 OK, 1 WARNING,
    2 CRITICAL, 3 UNKNOWN); with ``--format checkmk`` 0 (the status is in the line).
    """
    from . import monitor, monitor_fast, monitor_observe

    seen = None if args.live else monitor_fast.Consulted()  # what the verdict depends on, for its cache
    try:
        obs, a = monitor_observe.gather(args.vhost, paths.policy_path(), paths.state_dir(), seen)
        if args.live and a is not None and a.state != "unrecognised":
            from . import monitor_live
            obs = monitor_live.observe(obs, a, paths.state_dir(), paths.policy_path(), args.cache, args.timeout)
        verdict = monitor.judge(obs)
    except Exception as exc:  # the monitoring must always get a line: say what went wrong
        seen = None
        verdict = monitor.Verdict(monitor.UNKNOWN, f"internal error: {type(exc).__name__}: {exc}; "
                                                   "run `dataone-cn-sslverify status`")
    if seen is not None:
        monitor_observe.save_verdict(seen, args.vhost, verdict)
    if out.as_json:
        out.document(verdict.to_json())
    elif args.format == "checkmk":
        sys.stdout.write(monitor.format_checkmk(verdict))
    else:
        sys.stdout.write(monitor.format_nagios(verdict))
    return ExitCode.OK if args.format == "checkmk" else verdict.state


COMMANDS: Dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "status": cmd_status,
    "diff": cmd_diff,
    "apply": cmd_apply,
    "revert": cmd_revert,
    "backups": cmd_backups,
    "restore": cmd_restore,
    "probe": cmd_probe,
    "check": cmd_check,
    "discard-journal": cmd_discard_journal,
    "monitor": cmd_monitor,
}
TRANSACTIONS = ("apply", "revert", "restore")
#: Commands that never recover an interrupted change first (they must not write or reload).
READ_ONLY = ("monitor",)


#: Errors raised by the standard library or by modules whose own types do not
#: carry an exit code yet: a missing --vhost file or apache2ctl, an unknown backup ID.
_REFUSED_BUILTINS = (FileNotFoundError, KeyError)

_RESULT_LABEL = {ExitCode.REFUSED: "refused", ExitCode.NOT_FOUND: "not-found", ExitCode.UNREACHABLE: "unreachable",
                 ExitCode.UNRESTORED: "unrestored", ExitCode.HAZARD: "hazard", ExitCode.FAILED: "failed"}


def exit_code_of(exc: BaseException) -> Optional[ExitCode]:
    """The one mapping from an exception to the exit code; None for a bug (an unexpected exception)."""
    if isinstance(exc, SslVerifyError):
        return exc.exit_code
    if isinstance(exc, _REFUSED_BUILTINS):
        return ExitCode.REFUSED
    return None


def _report_error(exc: Exception, code: ExitCode, out: Output) -> int:
    label = _RESULT_LABEL.get(code, "failed")
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    out.line(f"{'error' if code == ExitCode.NOT_FOUND else label}: {text}")
    if code == ExitCode.REFUSED:
        for ln in display.point_at_non_ascii(text):
            out.line(ln)
    out.document({"result": label, "error": text})
    return int(code)


def _report_bug(exc: Exception, out: Output) -> int:
    """An unexpected exception: say honestly what state things are in."""
    journal = Store(paths.state_dir()).journal_path
    out.line(f"error: internal error: {type(exc).__name__}: {exc}")
    if os.path.exists(journal):
        out.line(f"error: a change was under way ({journal}); run `dataone-cn-sslverify status` to put the "
                 "previous configuration back (it recovers from the journal; if it says the journal is "
                 "unreadable, `dataone-cn-sslverify discard-journal` sets it aside), then report this")
        out.document({"result": "unrestored", "error": repr(exc)})
        return int(ExitCode.UNRESTORED)
    out.line("error: nothing was changed")
    out.document({"result": "refused", "error": repr(exc)})
    return int(ExitCode.REFUSED)


#: The Debian maintainer scripts' entry (``dataone-cn-sslverify maintscript postinst configure ...``); not for people.
MAINTSCRIPT = "maintscript"


def main(argv: Optional[List[str]] = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == [MAINTSCRIPT]:
        from . import maint
        return maint.main(args_in[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are refusals (2), --help is 0
        if exc.code and "monitor" in (sys.argv[1:] if argv is None else argv):
            # a monitoring plugin's bad arguments are UNKNOWN (3), not CRITICAL (2)
            print("UNKNOWN - invalid arguments (see above); run `dataone-cn-sslverify monitor --help`")
            return 3
        return int(exc.code or 0)
    out = Output(args.json, args.verbose)
    try:
        if args.command not in TRANSACTIONS + ("discard-journal",) + READ_ONLY:  # transactions recover under their own lock
            code = recover_first(out)
            if code >= 0:
                return code
        return int(COMMANDS[args.command](args, out))
    except Exception as exc:
        mapped = exit_code_of(exc)
        return _report_error(exc, mapped, out) if mapped is not None else _report_bug(exc, out)
