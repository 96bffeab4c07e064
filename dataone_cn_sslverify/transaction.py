"""One change to a live vhost, all or nothing: apply, revert, or restore a backup.

Steps, in order (each reports one line):

    lock -> recover -> configtest (before) -> locate -> plan -> backup ->
    journal -> write -> configtest -> reload -> probe -> commit

Before ``write`` nothing has changed, so a failure there is a refusal (exit 2)
or a plain failure (exit 1) with nothing to undo. From ``write`` on, any
failure goes through the single `Transaction._rollback` path: put the saved
bytes back atomically, test, reload (restart only what we broke), and exit 1;
if even that fails, exit 3 with the exact commands to run by hand.

The journal, written before the vhost is touched, makes a SIGKILL at any
point recoverable: the next run of any command finds it and puts the vhost
back to its pre-change bytes (`recover`).

``DATAONE_CN_SSLVERIFY_FAILPOINT=kill:STEP`` makes the process SIGKILL itself
when it reaches STEP: the test suite's real crash at a deterministic point.
"""

from __future__ import annotations

import os
import signal
import syslog
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import apacheconf as ac
from . import apachectl, locate, paths, policy, probe
from .store import Backup, LockTimeout, Store, atomic_write, read, sha256, temp_path

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_UNRESTORED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
LOCK_TIMEOUT = float(os.environ.get("DATAONE_CN_SSLVERIFY_LOCK_TIMEOUT", "60"))
PROBE_PATH = "/cn/"


@dataclass
class Step:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Outcome:
    result: str  # changed | unchanged | rolled-back | refused | failed | unrestored | not-found
    exit_code: int
    steps: List[Step] = field(default_factory=list)
    backup: Optional[str] = None
    file: Optional[str] = None
    message: str = ""
    probe: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"result": self.result, "exit_code": self.exit_code, "file": self.file, "backup": self.backup,
                "message": self.message, "steps": [s.to_json() for s in self.steps], "probe": self.probe}


class Abort(Exception):
    """Stop the transaction with this result (raised by steps, handled in `run`)."""

    def __init__(self, result: str, code: int, message: str) -> None:
        super().__init__(message)
        self.result, self.code, self.message = result, code, message


_FAILPOINT_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "hup": signal.SIGHUP, "int": signal.SIGINT}


def failpoint(step: str) -> None:
    """Test hook: send ourselves a real signal at step (``kill:STEP``, ``term:STEP``, ``hup:STEP``, ``int:STEP``).

    A crash (SIGKILL) or an interruption (an operator's Ctrl-C, a dropped ssh
    session) at a deterministic point, by real means rather than a simulation.
    """
    kind, _, at = os.environ.get("DATAONE_CN_SSLVERIFY_FAILPOINT", "").partition(":")
    if at == step and kind in _FAILPOINT_SIGNALS:
        os.kill(os.getpid(), _FAILPOINT_SIGNALS[kind])


def log_syslog(message: str, ok: bool) -> None:
    """One line per run in syslog (no-op where no syslog daemon listens)."""
    try:
        syslog.openlog("dataone-cn-sslverify", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_NOTICE if ok else syslog.LOG_ERR, message)
        syslog.closelog()
    except OSError:  # pragma: no cover - syslog(3) does not raise; belt and braces
        pass


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


IE11_ROW = "browser-ie11-win7/1.2/nocert"


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


class Transaction:
    """apply / revert / restore as explicit steps with one rollback path."""

    def __init__(self, op: str, *, vhost: Optional[str] = None, reload: bool = True, do_probe: bool = True,
                 backup_id: Optional[str] = None, report: Optional[Callable[[Step], None]] = None,
                 lock_timeout: float = LOCK_TIMEOUT, no_reload_reason: Optional[str] = None) -> None:
        assert op in ("apply", "revert", "restore")
        self.op, self.vhost, self.reload, self.do_probe, self.backup_id = op, vhost, reload, do_probe, backup_id
        # Added for maint.py: why reload=False, when it is not the operator's --no-reload
        # (e.g. "policy-rc.d forbids reload of apache2"); only changes the step's wording.
        self.no_reload_reason = no_reload_reason
        self.report = report or (lambda s: None)
        self.lock_timeout = lock_timeout
        self.store = Store(paths.state_dir())
        self.steps: List[Step] = []
        self.file: Optional[str] = None
        self.before: Optional[bytes] = None
        self.backup: Optional[Backup] = None
        self.written = False
        self.reloaded = False
        self.running_before = False
        self.assessment: Optional[policy.Assessment] = None
        self.probe_results: List[Dict[str, Any]] = []
        self.before_matrix: Optional[List[probe.ProbeResult]] = None
        self.snippet_mode = False  # apply on an applied vhost whose policy snippet was edited
        self.new: Optional[bytes] = None
        self.config_error = ""  # what `apache2ctl configtest` said before the change, if it failed

    # -- reporting ------------------------------------------------------------
    def step(self, name: str, ok: bool, detail: str) -> None:
        s = Step(name, ok, detail)
        self.steps.append(s)
        self.report(s)

    def _outcome(self, result: str, code: int, message: str) -> Outcome:
        out = Outcome(result, code, self.steps, self.backup.file if self.backup else None, self.file, message,
                      self.probe_results)
        log_syslog(f"{self.op} {self.file or '-'}: {result} (exit {code}){': ' + message if message else ''}", code == 0)
        return out

    # -- the transaction ------------------------------------------------------
    def run(self) -> Outcome:
        previous = _raise_on_hangup()
        try:
            self._lock()
            try:
                recovered = recover(self.store, self.step)
                if recovered is not None and recovered.exit_code == EXIT_UNRESTORED:
                    return self._outcome(recovered.result, recovered.exit_code, recovered.message)
                return self._run_locked()
            finally:
                self.store.unlock()
        except Abort as exc:
            return self._outcome(exc.result, exc.code, exc.message)
        finally:
            _restore_handlers(previous)

    def _lock(self) -> None:
        failpoint("lock")
        try:
            self.store.lock(self.op, self.lock_timeout)
        except LockTimeout as exc:
            self.step("lock", False, str(exc))
            raise Abort("refused", EXIT_REFUSED, str(exc))
        except OSError as exc:
            self.step("lock", False, f"state dir {self.store.root}: {exc.strerror or exc}")
            raise Abort("failed", EXIT_FAILED, f"cannot use the state dir {self.store.root}: {exc}; nothing changed")
        self.step("lock", True, self.store.lock_path)

    def _run_locked(self) -> Outcome:
        failpoint("recover")
        broken = self._configtest_before()
        new = self._plan()
        if broken is not None and not self.snippet_mode:
            raise broken  # the configuration was broken before us: refuse, nothing changed
        if new is None:
            return self._outcome("unchanged", EXIT_OK, f"{self.file}: nothing to do")
        self.new = new
        if broken is None:
            self._probe_before()
        self._backup()
        self._journal(new)
        try:
            self._write(new)
            if broken is not None:
                # The edited snippet is already on disk (an operator's edit, or dpkg unpacked a
                # new conffile) and it is what breaks the configuration: that is a failed change
                # of ours to undo, not a broken configuration to refuse.
                raise Abort("failed", EXIT_FAILED,
                            f"the edited policy snippet fails `apache2ctl configtest`: {self.config_error}")
            self._configtest_after()
            self._reload()
            self._probe()
        except Abort as exc:
            return self._rollback(exc.message)
        except BaseException as exc:  # Ctrl-C, SIGTERM/SIGHUP (see _raise_on_hangup), or a bug: never leave it half done
            outcome = self._rollback(f"interrupted ({type(exc).__name__}: {exc})")
            if not isinstance(exc, Exception):
                outcome.message += " (interrupted)"
            return outcome
        failpoint("commit")
        self.store.clear_journal()
        if self.op == "revert":
            self.store.drop_block(self.file or "")
        if self.op == "apply":
            self._record_snippet()
        pruned = self.store.prune(self.file or "")
        self.step("commit", True, f"{self.file} {self.op} done" + (f"; pruned {len(pruned)} old backups" if pruned else ""))
        return self._outcome("changed", EXIT_OK, f"{self.op} done: {self.file}")

    def _record_snippet(self) -> None:
        """Remember the snippet bytes Apache now loads (see `_plan_snippet`); best effort."""
        snippet = paths.policy_path()
        try:
            self.store.record_snippet(snippet, read(snippet))
        except OSError as exc:
            self.step("commit", True, f"could not record {snippet} in {self.store.root} ({exc.strerror}); "
                                      "the next apply reloads once more")

    def _configtest_before(self) -> Optional[Abort]:
        """Test the configuration as it is now; the refusal to raise if it fails (None if ok).

        The caller raises it unless the plan shows that the failure is an edit
        of our own policy snippet, which the transaction then rolls back.
        """
        failpoint("configtest-before")
        self.running_before = apachectl.is_running()
        res = apachectl.configtest()
        if not res.ok:
            self.config_error = res.first_error
            self.step("configtest", False, f"current configuration already fails: {res.first_error}")
            return Abort("refused", EXIT_REFUSED,
                         f"the current Apache configuration already fails `apache2ctl configtest` ({res.first_error}); "
                         "fix it first; nothing changed")
        self.step("configtest", True, "current configuration ok")
        return None

    def _plan(self) -> Optional[bytes]:
        """Decide the new bytes of the vhost file, or None when there is nothing to do."""
        failpoint("plan")
        snippet = paths.policy_path()
        loc: Optional[locate.Located] = None
        try:
            if self.op == "restore":
                return self._plan_restore()
            loc = locate.locate(self.vhost, snippet)
            a = locate.choose(loc)
            self.assessment = a
            self.file = a.filename
            self.before = loc.file_of(a).data
            text = ac.decode(self.before)
            if self.op == "apply":
                check_snippet(snippet)
                patch = policy.plan_apply(text, a, snippet)
                if patch is None and a.state == "applied":
                    self.step("locate", True, f"{a.filename}:{a.line} {a.server_name or '-'} ({a.state_label})")
                    return self._plan_snippet(snippet)
            else:
                saved = self.store.load_block(a.filename)
                if saved is None and a.state == "applied":
                    raise policy.PolicyError(f"{a.filename}:{a.line}: no saved original block in {self.store.blocks_dir}; "
                                             "use `dataone-cn-sslverify backups` and `restore ID`")
                if saved is None and a.state in ("original", "superseded"):
                    # Never applied, or already reverted (commit drops the saved block): nothing to
                    # do, exit 0 (design: "0 done or nothing to do"). Before this, plan_revert was
                    # given "" and a second `revert` was refused as "removed or edited by hand".
                    self.step("locate", True, f"{a.filename}:{a.line} {a.server_name or '-'} ({a.state_label})")
                    self.step("plan", True, f"{a.state_label}: no managed block, nothing to revert")
                    return None
                patch = policy.plan_revert(text, a, saved["block"] if saved else "")
        except locate.NotFound as exc:
            # revert: a loaded SSL vhost whose original block we saved (so we applied it) but
            # that now holds no block at all had our managed lines deleted by hand. That is a
            # refusal with a clear message (exit 2), not "no CN SSL vhost found" (exit 4).
            gone = [x for x in (loc.assessments if loc else []) if self.op == "revert" and self.store.load_block(x.filename)]
            if gone:
                g = gone[0]
                msg = (f"{g.filename}:{g.line}: the managed Include was removed by hand (no client-verification block "
                       f"left); the saved original block is in {self.store.blocks_dir}, nothing safe to revert")
                self.step("plan", False, msg)
                raise Abort("refused", EXIT_REFUSED, f"{msg}; nothing changed")
            self.step("locate", False, str(exc))
            raise Abort("not-found", EXIT_NOT_FOUND, f"{exc}; nothing changed")
        except (policy.PolicyError, ac.ConfigSyntaxError, FileNotFoundError) as exc:
            self.step("plan", False, str(exc))
            raise Abort("refused", EXIT_REFUSED, f"{exc}; nothing changed")
        self.step("locate", True, f"{a.filename}:{a.line} {a.server_name or '-'} ({a.state_label})")
        if patch is None:
            self.step("plan", True, f"{a.state_label}: nothing to do")
            return None
        self.step("plan", True, f"replace lines {patch.first_line}-{patch.last_line} ({a.state_label} -> "
                                f"{'managed Include' if self.op == 'apply' else 'original block'})")
        return ac.encode(patch.apply_to(text))

    def _plan_snippet(self, snippet: str) -> Optional[bytes]:
        """The vhost is applied: does Apache run the policy snippet that is on disk now?

        The snippet is a conffile: an operator edits the browser pattern, or an
        upgrade ships a new one. Its bytes at the last apply/reload are kept in
        the state dir; if they differ, the change to make live is the snippet's:
        the same steps (config test, graceful reload, live check) with the
        recorded bytes as the "before" that a rollback puts back (the edit
        itself is kept as a backup). No record yet: record it, nothing to do.
        """
        try:
            cur = read(snippet)
            rec = self.store.snippet_record()
            if rec is None or rec.get("path") != snippet:
                self.store.record_snippet(snippet, cur)
                rec = {"data": cur}
        except OSError as exc:
            raise policy.PolicyError(f"{snippet}: {exc.strerror or exc}") from None
        if rec["data"] == cur:
            self.step("plan", True, f"applied, and {snippet} is unchanged since it was last loaded: nothing to do")
            return None
        self.snippet_mode = True
        self.file = os.path.realpath(snippet)
        self.before = rec["data"]
        self.step("plan", True, f"{snippet} was edited since it was last loaded: config test, reload and live check "
                                "make it live (rolled back to the previous snippet, the edit kept as a backup, on failure)")
        return cur

    def _plan_restore(self) -> Optional[bytes]:
        try:
            b = self.store.get_backup(self.backup_id or "")
            data = self.store.verified_bytes(b)
        except (KeyError, ValueError, OSError) as exc:
            self.step("plan", False, str(exc))
            raise Abort("refused", EXIT_REFUSED, f"{exc}; nothing changed")
        self.file = b.path
        try:
            self.before = read(b.path)
        except OSError as exc:
            raise Abort("refused", EXIT_REFUSED, f"{b.path}: {exc.strerror}; nothing changed")
        try:
            ac.parse(data, b.path)
        except ac.ConfigSyntaxError as exc:
            raise Abort("refused", EXIT_REFUSED, f"backup {b.id} does not parse ({exc}); nothing changed")
        self.step("locate", True, f"{b.path} (backup {b.id} of {b.when})")
        if data == self.before:
            self.step("plan", True, "the file already holds these bytes: nothing to do")
            return None
        self.step("plan", True, f"restore {b.size} bytes from {b.file}")
        return data

    def _backup(self) -> None:
        failpoint("backup")
        assert self.file and self.before is not None
        try:
            self.store.ensure()
            if self.snippet_mode and self.new is not None:  # keep the operator's edit: a rollback replaces it
                self.store.backup(self.file, self.new, "snippet-edit")
            self.backup = self.store.backup(self.file, self.before, "snippet" if self.snippet_mode else self.op)
            if self.op == "apply" and not self.snippet_mode and self.assessment is not None and self.assessment.block is not None:
                blk = self.assessment.block
                self.store.save_block(self.file, ac.decode(self.before)[blk.start:blk.end], blk.variant,
                                      server_name=self.assessment.server_name, backup=self.backup.id)
        except OSError as exc:
            raise self._state_failure("backup", "the backup in", self.store.root, exc)
        self.step("backup", True, self.backup.file)

    def _journal(self, new: bytes) -> None:
        failpoint("journal")
        assert self.backup is not None and self.before is not None
        try:
            self.store.write_journal({
                "op": self.op, "file": self.file, "backup": self.backup.file, "before_sha256": sha256(self.before),
                "after_sha256": sha256(new), "pid": os.getpid(), "started": time.time(),
                "running_before": self.running_before, "step": "journal",
            })
        except OSError as exc:
            raise self._state_failure("journal", "the journal", self.store.journal_path, exc)
        self.step("journal", True, self.store.journal_path)

    def _state_failure(self, step: str, what: str, where: str, exc: OSError, touched: bool = False) -> Abort:
        """The state dir could not be written (full, read-only): report and stop.

        Before the vhost is touched that is the whole story (exit 1, nothing
        changed); after it, the caller's rollback path handles the Abort.
        """
        why = exc.strerror or str(exc)
        self.step(step, False, f"{where}: {why}")
        verb = "could not" if touched else "could not write"
        tail = "" if touched else f"; {self.file} not touched, previous configuration still active"
        return Abort("failed", EXIT_FAILED, f"{verb} {what} {where} ({why}){tail}")

    def _mark(self, step: str) -> None:
        # An OSError here (state dir full: the journal is rewritten through a temp file)
        # used to escape `run` as a traceback after the vhost was already written,
        # leaving the change in place with no rollback. Raise Abort so that the
        # caller's `except Abort` takes the one rollback path.
        try:
            j = self.store.read_journal() or {}
            j["step"] = step
            self.store.write_journal(j)
        except OSError as exc:
            raise self._state_failure("journal", "update the journal", self.store.journal_path, exc, touched=True)

    def _write(self, new: bytes) -> None:
        failpoint("write")
        assert self.file
        try:
            atomic_write(self.file, new)
        except OSError as exc:
            self.step("write", False, f"{self.file}: {exc.strerror or exc}")
            raise Abort("failed", EXIT_FAILED, f"could not write {self.file}: {exc.strerror or exc}")
        self.written = True
        self.step("write", True, f"{self.file} ({len(new)} bytes, atomic)")  # reported before _mark can fail
        self._mark("written")

    def _configtest_after(self) -> None:
        failpoint("configtest")
        res = apachectl.configtest()
        if not res.ok:
            self.step("configtest", False, res.first_error)
            raise Abort("failed", EXIT_FAILED, f"the changed configuration fails `apache2ctl configtest`: {res.first_error}")
        self.step("configtest", True, "ok")

    def _reload(self) -> None:
        failpoint("reload")
        if not self.reload:
            if self.no_reload_reason:  # maint.py (see __init__)
                self.step("reload", True, f"not done ({self.no_reload_reason}): the change is written and tested "
                                          "and takes effect when Apache is next reloaded or started")
                return
            self.step("reload", True, "skipped (--no-reload): the change takes effect at the next reload")
            return
        if not apachectl.is_running():
            self.step("reload", True, "Apache is not running: not started; the change takes effect at its next start")
            return
        self._mark("reloaded")
        self.reloaded = True  # after _mark: if the journal update fails, no reload was attempted
        r = apachectl.graceful()
        if not r.ok:
            self.step("reload", False, r.detail)
            raise Abort("failed", EXIT_FAILED, f"reload failed: {r.detail}")
        self.step("reload", True, f"{r.how}: {r.detail}")

    def _target(self) -> Optional[Tuple[str, int, str]]:
        return probe_target(self.assessment) if self.assessment is not None else None

    def _probe_before(self) -> None:
        """The client matrix before the change, so the gate can tell what must keep working."""
        target = self._target()
        if not self.do_probe or not self.reload or self.op == "restore" or target is None or not apachectl.is_running():
            return
        host, port, sni = target
        self.before_matrix = probe.probe_matrix(host, port, sni, PROBE_PATH, timeout=10.0)
        asked = sum(1 for r in self.before_matrix if r.cert_requested)
        self.step("probe-before", True, f"{len(self.before_matrix)} client rows probed, {asked} asked for a certificate")

    def _probe(self) -> None:
        failpoint("probe")
        target = self._target()
        if not self.do_probe or not self.reloaded or self.op == "restore" or target is None:
            why = "--no-probe" if not self.do_probe else ("restore" if self.op == "restore" else "Apache not reloaded")
            self.step("probe", True, f"skipped ({why})")
            return
        host, port, sni = target
        results = probe.probe_matrix(host, port, sni, PROBE_PATH, timeout=10.0)
        self.probe_results = [r.to_json() for r in results]
        ok, summary = gate(self.op, self.before_matrix, results)
        self.step("probe", ok, f"https://{sni}:{port}{PROBE_PATH} via {host}: {summary}")
        if not ok:
            raise Abort("failed", EXIT_FAILED, f"live check failed: {summary}")

    # -- the one rollback path ------------------------------------------------
    def _rollback(self, reason: str) -> Outcome:
        previous = _ignore_interrupts()  # the way back must not be interrupted half-way
        try:
            return self._rollback_steps(reason)
        finally:
            _restore_handlers(previous)

    def _rollback_steps(self, reason: str) -> Outcome:
        assert self.file and self.before is not None
        backup = self.backup.file if self.backup else "(none)"
        manual = manual_commands(self.file, backup)
        try:
            try:  # the bytes on disk decide, not the flag: a failure after the rename (fsync) left them new
                changed = read(self.file) != self.before
            except OSError:
                changed = True
            if changed:
                atomic_write(self.file, self.before)
                self.step("rollback", True, f"{self.file} restored from {backup}")
            else:
                self.step("rollback", True, f"{self.file} was not changed")
            res = apachectl.configtest()
            if not res.ok:
                raise RuntimeError(f"configtest after restore fails: {res.first_error}")
            if self.reloaded:
                if apachectl.is_running():
                    r = apachectl.graceful()
                    if not r.ok:
                        raise RuntimeError(f"reload after restore failed: {r.detail}")
                    self.step("rollback", True, f"reloaded: {r.detail}")
                elif self.running_before:
                    res = apachectl.run(["start"])
                    if not res.ok:
                        raise RuntimeError(f"Apache died and could not be started again: {res.first_error}")
                    self.step("rollback", True, "Apache had stopped during the change: started again")
        except (OSError, RuntimeError) as exc:
            self.step("rollback", False, str(exc))
            return self._outcome("unrestored", EXIT_UNRESTORED,
                                 f"{reason}; the rollback failed too ({exc}). Run by hand: {manual}")
        self.store.clear_journal()
        return self._outcome("rolled-back", EXIT_FAILED,
                             f"{reason}; rolled back: the previous configuration is active again")


class Hangup(Exception):
    """SIGTERM or SIGHUP (an ssh session that drops) arrived during a transaction."""


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_on_hangup() -> Dict[int, Any]:
    """Turn SIGTERM/SIGHUP into an exception (SIGINT already is one) so they take the rollback path."""
    if not _on_main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        raise Hangup(signal.Signals(signum).name)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}


def _ignore_interrupts() -> Dict[int, Any]:
    if not _on_main_thread():
        return {}
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in _INTERRUPTS}


def _restore_handlers(previous: Dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def manual_commands(file: str, backup: str) -> str:
    return f"cp -p {backup} {file} && apache2ctl configtest && apache2ctl graceful"


def check_snippet(snippet: str) -> str:
    """The policy snippet must exist and hold the target block; returns its pattern."""
    try:
        data = read(snippet)
    except OSError as exc:
        raise policy.PolicyError(f"{snippet}: policy snippet missing ({exc.strerror}); reinstall dataone-cn-sslverify") from None
    return policy.snippet_pattern(ac.parse(data, snippet))


def recover(store: Store, step: Callable[[str, bool, str], None]) -> Optional[Outcome]:
    """Finish the story of a run that died: put its vhost back to the bytes it had before.

    Returns None when there was nothing to recover, else an Outcome whose
    exit_code is EXIT_UNRESTORED if a person must look (never guesses).
    """
    j = store.read_journal()
    if j is None:
        return None
    file, bfile = j.get("file"), j.get("backup")
    pid = j.get("pid")
    try:
        cur = read(file)
    except OSError as exc:
        msg = f"interrupted {j.get('op')} (pid {pid}) left {file} unreadable: {exc.strerror}. Run by hand: {manual_commands(file, bfile)}"
        step("recover", False, msg)
        return Outcome("unrestored", EXIT_UNRESTORED, message=msg)
    try:
        os.unlink(temp_path(file))
    except OSError:
        pass
    h = sha256(cur)
    if h == j.get("after_sha256"):
        try:
            data = read(bfile)
            if sha256(data) != j.get("before_sha256"):
                raise OSError(0, "backup does not match the journal")
            atomic_write(file, data)
        except OSError as exc:
            msg = f"interrupted {j.get('op')} (pid {pid}): could not restore {file} from {bfile} ({exc.strerror}). Run by hand: {manual_commands(file, bfile)}"
            step("recover", False, msg)
            return Outcome("unrestored", EXIT_UNRESTORED, message=msg)
        detail = f"interrupted {j.get('op')} (pid {pid}) rolled back: {file} restored from {bfile}"
        reload_needed = True
    elif h == j.get("before_sha256"):
        detail = f"interrupted {j.get('op')} (pid {pid}) had not changed {file}"
        reload_needed = j.get("step") == "reloaded"
    else:
        msg = (f"interrupted {j.get('op')} (pid {pid}): {file} was changed by someone else since; not touching it. "
               f"Compare it with {bfile}, then remove {store.journal_path}")
        step("recover", False, msg)
        return Outcome("unrestored", EXIT_UNRESTORED, message=msg)
    # A reload (or start) that is owed but fails is not a recovery: keep the journal (the
    # next run tries again) and exit 3 with the commands. Before, the failure was only
    # appended to the detail, the journal was cleared and the run reported success.
    problem = None
    if reload_needed and apachectl.is_running():
        ct = apachectl.configtest()
        if not ct.ok:
            problem = f"the restored configuration fails `apache2ctl configtest`: {ct.first_error}"
        else:
            r = apachectl.graceful()
            if r.ok:
                detail += f"; reloaded ({r.detail})"
            else:
                problem = f"reload failed: {r.detail}"
    elif reload_needed and j.get("running_before") and j.get("step") == "reloaded":
        res = apachectl.run(["start"])
        if res.ok:
            detail += "; Apache had stopped: started again"
        else:
            problem = f"Apache is stopped and did not start: {res.first_error}"
    if problem is not None:
        msg = f"{detail}; but {problem}. Run by hand: {manual_commands(file, bfile)}"
        step("recover", False, msg)
        return Outcome("unrestored", EXIT_UNRESTORED, message=msg)
    store.clear_journal()
    step("recover", True, detail)
    return Outcome("recovered", EXIT_OK, message=detail)
