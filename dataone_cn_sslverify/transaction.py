"""One change to a live vhost, all or nothing: apply, revert, or restore a backup.

Steps, in order (each reports one line):

    lock -> recover -> configtest (before) -> locate -> plan -> backup ->
    journal -> write -> configtest -> reload -> probe -> commit

Before ``write`` nothing has changed, so a failure there is a refusal (exit 2)
or a plain failure (exit 1) with nothing to undo. ``write`` is a compare and
swap: if the vhost no longer holds the bytes the plan was made from, nothing
is written (exit 2). From ``write`` on, any failure goes through the single
rollback path, `reverter.Reverter.undo` -- the same one that recovers after a
crash: put back each file that still holds our bytes, test, reload (or start
what died), verify that Apache serves, exit 1; if any of it cannot be done,
exit 3 with the exact commands.

The journal, written before the vhost is touched, makes a SIGKILL at any
point recoverable: the next run of any command finds it (`recover`).
SIGINT/SIGTERM/SIGHUP are deferred to step boundaries (`interrupts`), so no
signal can skip the rollback.

`FAILPOINT` is a test hook, settable only in-process (tests/ has the
wrapper that runs the command with it); the package reads no environment
variable for it.
"""

import json
import os
import syslog
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import apacheconf as ac
from . import apachectl, display, interrupts, paths, policy, reverter
from .store import atomic_write
from .errors import ExitCode, SslVerifyError
from .locate import probe_target
from .outcome import Abort, Outcome, Step
from .planning import Planning, check_snippet
from .store import Backup, ChangedMeanwhile, JournalUnreadable, LockTimeout, Store, cas_write, read, sha256

LOCK_TIMEOUT = float(os.environ.get("DATAONE_CN_SSLVERIFY_LOCK_TIMEOUT", "60"))
PROBE_PATH = "/cn/"
TOOL = "dataone-cn-sslverify"

#: Test hook called with each step's name as it starts (tests/integration/failpoint_cli.py sets it).
FAILPOINT: Optional[Callable[[str], None]] = None

__all__ = ["Transaction", "Outcome", "Step", "recover", "check_snippet", "probe_target", "LOCK_TIMEOUT"]


def failpoint(step: str) -> None:
    if FAILPOINT is not None:
        FAILPOINT(step)


def log_syslog(message: str, ok: bool) -> None:
    """One line per run in syslog (no-op where no syslog daemon listens)."""
    try:
        syslog.openlog("dataone-cn-sslverify", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_NOTICE if ok else syslog.LOG_ERR, message)
        syslog.closelog()
    except OSError:  # pragma: no cover - syslog(3) does not raise; belt and braces
        pass


class Background:
    """One function run in a daemon thread: `result` waits for it and returns its value or raises its exception."""

    def __init__(self, fn: Callable[[], Any], limit: float = 60.0) -> None:
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._limit = limit
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> Any:
        self._thread.join(self._limit)
        if self._thread.is_alive():
            raise RuntimeError(f"a background step did not finish within {self._limit:.0f}s")
        if self._error is not None:
            raise self._error
        return self._value

    def close(self, cleanup: Callable[[Any], None]) -> None:
        """Wait for it (bounded) and clean up its value, if it made one."""
        self._thread.join(self._limit)
        if self._value is not None:
            cleanup(self._value)


class Transaction(Planning):
    """apply / revert / restore as explicit steps with one rollback path."""

    def __init__(self, op: str, *, vhost: Optional[str] = None, reload: bool = True, do_probe: bool = True,
                 backup_id: Optional[str] = None, report: Optional[Callable[[Step], None]] = None,
                 lock_timeout: float = LOCK_TIMEOUT, service: Optional[apachectl.ServiceControl] = None,
                 hold_signals: bool = False, adopt: bool = False) -> None:
        assert op in ("apply", "revert", "restore")
        self.op, self.vhost, self.reload, self.do_probe, self.backup_id = op, vhost, reload, do_probe, backup_id
        # How Apache is reloaded or started, here and on the way back (the reverter): by hand, or
        # through invoke-rc.d from a maintainer script (apachectl.ServiceControl).
        self.service = service or apachectl.BY_HAND
        self.report = report or (lambda s: None)
        self.lock_timeout = lock_timeout
        self.store = Store(paths.state_dir())
        self.steps: List[Step] = []
        self.file: Optional[str] = None
        self.before: Optional[bytes] = None  # what a rollback puts back
        self.basis: Optional[bytes] = None  # the bytes the plan was made from (compare-and-swap)
        self.backup: Optional[Backup] = None
        self.written = False
        self.reloaded = False
        self.running_before = False
        self.assessment: Optional[policy.Assessment] = None
        self.probe_results: List[Dict[str, Any]] = []
        self.gate_verdict: Optional[Dict[str, Any]] = None
        self.snippet_mode = False  # the configuration fails because of our own live copy: the change replaces it
        self.adopt = adopt  # apply: replace a superseded inline block by the managed Include too
        self.live_new: Optional[bytes] = None  # the policy's live copy to write with the vhost (`snippet`)
        self.revert_to_policy = False  # revert of an adopted inline policy: the live check is apply's
        self.new: Optional[bytes] = None
        self.config_error = ""  # what `apache2ctl configtest` said before the change, if it failed
        self.dump: Optional[apachectl.Result] = None  # the before-change test's -D DUMP_INCLUDES run, for locate
        self.target: Optional[Tuple[str, int, str]] = None  # where the live check connects (`_target`)
        self.live_prep: Any = None  # livecheck.Preparation, started after the write (`_prepare_probe`)
        self.tested = False  # the changed configuration was config-tested (by `_configtest` or by the reload)
        self.listening: Optional[Background] = None  # apachectl.listening_sockets, read in a thread
        self.warnings: List[str] = []
        self.signals = interrupts.Deferred(hold=hold_signals)  # hold: see interrupts.Deferred
        self.reverter: Optional[reverter.Reverter] = None

    # -- reporting ------------------------------------------------------------
    def step(self, name: str, ok: bool, detail: str) -> None:
        s = Step(name, ok, detail)
        self.steps.append(s)
        self.report(s)

    def _outcome(self, result: str, code: int, message: str) -> Outcome:
        for w in self.warnings if result == "changed" else ():  # about the change made, so only when it was
            message += f"; warning: {w}"
        if self.signals.received:
            message += f" ({self.signals.summary()} received during the run: " + (
                "taken as an interruption)" if result != "changed" else "arrived after the commit point)")
        out = Outcome(result, code, self.steps, self.backup.file if self.backup else None, self.file, message,
                      self.probe_results, self.gate_verdict)
        log_syslog(f"{self.op} {self.file or '-'}: {result} (exit {int(code)}){': ' + message if message else ''}",
                   code == 0)
        return out

    def _checkpoint(self, step: str) -> None:
        """The start of a step: the test hook, then any deferred signal is acted on here."""
        failpoint(step)
        sig = self.signals.pending()
        if sig is not None:
            raise Abort("failed", ExitCode.FAILED, f"interrupted by {sig}" + ("" if self.written else
                                                                             " before anything was written"))

    # -- the transaction ------------------------------------------------------
    def run(self) -> Outcome:
        with self.signals:
            try:
                self._lock()
                try:
                    self._checkpoint("recover")
                    recovered = self._recover()
                    if recovered is not None:
                        return recovered
                    return self._run_locked()
                finally:
                    self.store.unlock()
            except Abort as exc:
                return self._outcome(exc.result, exc.code, exc.message)
            except SslVerifyError as exc:  # an unsafe state dir, an unreadable journal
                return self._outcome("refused" if exc.exit_code == ExitCode.REFUSED else "unrestored", exc.exit_code,
                                     str(exc))

    def _lock(self) -> None:
        failpoint("lock")
        try:
            self.store.lock(self.op, self.lock_timeout, self.signals.interrupted)
        except LockTimeout as exc:
            self.step("lock", False, str(exc))
            raise Abort("refused", ExitCode.REFUSED, str(exc))
        except SslVerifyError as exc:
            self.step("lock", False, str(exc))
            raise
        except OSError as exc:
            self.step("lock", False, f"state dir {self.store.root}: {exc.strerror or exc}")
            raise Abort("failed", ExitCode.FAILED, f"cannot use the state dir {self.store.root}: {exc}; nothing changed")
        self.step("lock", True, self.store.lock_path)

    def _recover(self) -> Optional[Outcome]:
        """A run that died left a journal: undo it first; stop (exit 3) if a person must look."""
        got = recover(self.store, self.step, defer=False, service=self.service)
        if got is not None and got.exit_code == ExitCode.UNRESTORED:
            return self._outcome(got.result, got.exit_code, got.message)
        return None

    def _run_locked(self) -> Outcome:
        # Where Apache listens (for the live check's target): kernel time, read meanwhile.
        self.listening = Background(apachectl.listening_sockets)
        broken = self._configtest_before()
        new = self._plan()
        if broken is not None and not self.snippet_mode:
            raise broken  # the configuration was broken before us: refuse, nothing changed
        if new is None:
            return self._outcome("unchanged", ExitCode.OK, f"{self.file}: nothing to do")
        self.new = new
        self._backup()
        self._journal(new)
        try:
            self._write(new)
            if self.live_new is not None:
                self.write(paths.live_path(), self.live_new)
            self._configtest_after()
            self._reload()
            self._probe()
            self._checkpoint("commit")
        except Abort as exc:
            if not self.written and exc.code == ExitCode.REFUSED:
                self._discard_journal()
                return self._outcome(exc.result, exc.code, exc.message)
            return self._rollback(exc.message)
        except BaseException as exc:  # a bug: never leave it half done
            return self._rollback(f"internal error ({type(exc).__name__}: {exc})")
        finally:
            if self.live_prep is not None:
                self.live_prep.close(lambda prep: prep.close())
        self._commit()
        return self._outcome("changed", ExitCode.OK, f"{self.op} done: {self.file}")

    def _commit(self) -> None:
        assert self.reverter is not None
        self.reverter.commit()
        if self.op == "revert":
            self.store.drop_block(self.file or "")
        if self.live_new is not None:
            self._rejected(None)
        pruned = self.store.prune(self.file or "")
        self.step("commit", True, f"{self.file} {self.op} done" + (f"; pruned {len(pruned)} old backups" if pruned else ""))

    def _rejected(self, reason: Optional[str]) -> None:
        """Note (for `status` only) why the policy file's current bytes did not go live; None: they did."""
        conffile = paths.policy_path()
        path = os.path.join(self.store.root, "rejected.json")
        try:
            if reason is None:
                if os.path.exists(path):
                    os.unlink(path)
                return
            rec = {"policy": conffile, "sha256": sha256(read(conffile)), "reason": reason}
            atomic_write(path, json.dumps(rec, sort_keys=True).encode(), mode=0o600)
        except OSError:
            pass  # status then says "edited, not live yet" instead of why: nothing depends on it

    def _configtest_before(self) -> Optional[Abort]:
        """Test the configuration as it is now; the refusal to raise if it fails (None if ok).

        The caller raises it unless the plan shows that the failure is an edit
        of our own policy snippet, which the transaction then rolls back.
        One Apache parse serves two steps: ``apache2ctl -t -D DUMP_INCLUDES`` is
        a complete config test (``-t``: exit 0 only on "Syntax OK") and lists
        the files Apache loads, which the plan's `locate` reads (`self.dump`).
        With ``--vhost`` (locate reads that file only) and for ``restore`` it
        is plain ``apache2ctl configtest``.
        """
        self._checkpoint("configtest-before")
        self.running_before = apachectl.is_running()
        if self.vhost or self.op == "restore":
            res = apachectl.configtest()
        else:
            res = self.dump = apachectl.dump_includes()
        if not res.ok:
            self.config_error = res.first_error
            self.step("configtest", False, f"current configuration already fails: {res.first_error}")
            return Abort("refused", ExitCode.REFUSED,
                         f"the current Apache configuration already fails `apache2ctl configtest` ({res.first_error}); "
                         "fix it first; nothing changed")
        self.step("configtest", True, "current configuration ok")
        return None

    def _backup(self) -> None:
        self._checkpoint("backup")
        assert self.file and self.before is not None
        try:
            self.store.ensure()
            self.backup = self.store.backup(self.file, self.before, self.op)
            if self.op == "apply" and self.new != self.before and self.assessment is not None \
                    and self.assessment.state != "applied" and self.assessment.block is not None:
                blk = self.assessment.block
                self.store.save_block(self.file, ac.decode(self.before)[blk.start:blk.end], blk.variant,
                                      server_name=self.assessment.server_name, backup=self.backup.id)
        except OSError as exc:
            raise self._state_failure("backup", "the backup in", self.store.root, exc)
        self.step("backup", True, self.backup.file)

    def _journal(self, new: bytes) -> None:
        """The checkpoint: which file, its hash before, the hash of what we write, the backup."""
        self._checkpoint("journal")
        assert self.backup is not None and self.before is not None and self.file
        self.reverter = reverter.Reverter(self.store, reverter.Journal(
            op=self.op, pid=os.getpid(), started=time.time(), running_before=self.running_before,
            target=self._target()), self.service)
        try:
            self.reverter.checkpoint(self.file, self.before, new, self.backup.file)
        except OSError as exc:
            self._discard_journal()
            raise self._state_failure("journal", "the journal", self.store.journal_path, exc)
        self.step("journal", True, self.store.journal_path)

    def _discard_journal(self) -> None:
        """Nothing was written: the checkpoint has nothing to undo."""
        try:
            self.store.clear_journal()
        except OSError:
            pass

    def _state_failure(self, step: str, what: str, where: str, exc: OSError, touched: bool = False) -> Abort:
        """The state dir could not be written (full, read-only): report and stop.

        Before the vhost is touched that is the whole story (exit 1, nothing
        changed); after it, the caller's rollback path handles the Abort.
        """
        why = exc.strerror or str(exc)
        self.step(step, False, f"{where}: {why}")
        verb = "could not" if touched else "could not write"
        tail = "" if touched else f"; {self.file} not touched, previous configuration still active"
        return Abort("failed", ExitCode.FAILED, f"{verb} {what} {where} ({why}){tail}")

    def _mark(self, step: str) -> None:
        # An OSError here (state dir full: the journal is rewritten through a temp file) is an
        # Abort, so that the caller's `except Abort` takes the one rollback path.
        assert self.reverter is not None
        try:
            self.reverter.mark(step)
        except OSError as exc:
            raise self._state_failure("journal", "update the journal", self.store.journal_path, exc, touched=True)

    def _write(self, new: bytes) -> None:
        """Compare and swap: written only if the file still holds the bytes the plan was made from."""
        self._checkpoint("write")
        assert self.file and self.basis is not None
        try:
            if new != self.basis:  # an edit of the policy file alone leaves the vhost as it is
                cas_write(self.file, new, self.basis)
        except ChangedMeanwhile:
            msg = (f"{self.file} was changed by someone else while {self.op} ran; nothing written "
                   f"(run `{TOOL} {self.op}` again to plan from its new bytes)")
            self.step("write", False, msg)
            raise Abort("refused", ExitCode.REFUSED, msg)
        except OSError as exc:
            self.step("write", False, f"{self.file}: {exc.strerror or exc}")
            raise Abort("failed", ExitCode.FAILED, f"could not write {self.file}: {exc.strerror or exc}")
        self.written = True
        self.step("write", True, f"{self.file} ({len(new)} bytes, atomic)")  # reported before _mark can fail
        self._mark("written")

    def write(self, path: str, new: bytes, *, managed: bool = True) -> None:
        """Change one more file in this transaction: backed up, in the journal, compare-and-swap written.

        For a file only this tool writes (register its path in
        `reverter.MANAGED_FILES` so a recovery trusts it). Call it after the
        vhost's ``write`` step, inside the steps that roll back: the
        reverter then puts it back (or removes it, if it did not exist) with
        the vhost, under the same rule (only if it still holds our bytes).
        """
        assert self.reverter is not None and self.written, "write() comes after the vhost's write step"
        real = os.path.realpath(path)
        try:
            basis: Optional[bytes] = read(real)
        except FileNotFoundError:
            basis = None
        if basis == new:
            return
        try:
            b = self.store.backup(real, basis, self.op) if basis is not None else None
            self.reverter.checkpoint(real, basis, new, b.file if b else None, managed)
        except OSError as exc:
            raise self._state_failure("journal", "record", real, exc, touched=True)
        try:
            cas_write(real, new, basis, new_file=basis is None, mode=0o644)
        except ChangedMeanwhile:
            self.reverter.forget(real)
            raise Abort("failed", ExitCode.FAILED, f"{real} was changed by someone else while {self.op} ran")
        except OSError as exc:
            self.step("write", False, f"{real}: {exc.strerror or exc}")
            raise Abort("failed", ExitCode.FAILED, f"could not write {real}: {exc.strerror or exc}")
        self.step("write", True, f"{real} ({len(new)} bytes, atomic)")

    def _configtest_after(self) -> None:
        """Test the changed configuration before Apache loads it; when a reload follows, the reload is the test.

        Every way this tool reloads tests the configuration before it signals
        Apache and refuses a failing one, leaving the running server as it
        was: ``apache2ctl -k graceful`` (httpd reads and checks the whole
        configuration exactly as ``-t`` does, then exits 1 before any
        signal: ``test_reload_tested``), and systemd's or invoke-rc.d's
        reload (``apachectl graceful``: ``-t`` first). Running
        ``apache2ctl configtest`` before it as well would parse the whole
        configuration a third time per change. So the explicit test runs
        only when no reload follows (``--no-reload``, Apache stopped, a
        reload denied by policy-rc.d); `_reload` reports the test that the
        reload made, and tells a failing configuration from a failing reload.
        """
        self._checkpoint("configtest")
        if not (self.reload and apachectl.is_running()):
            self._configtest()

    def _configtest(self) -> None:
        """``apache2ctl configtest`` of the changed configuration (an Abort, rolled back, if it fails)."""
        res = apachectl.configtest()
        self.tested = True
        if not res.ok:
            self.step("configtest", False, res.first_error)
            raise Abort("failed", ExitCode.FAILED, f"the changed configuration fails `apache2ctl configtest`: {res.first_error}")
        self.step("configtest", True, "ok")

    def _reload(self) -> None:
        self._checkpoint("reload")
        if not self.reload or not apachectl.is_running():
            if not self.tested:  # Apache stopped since _configtest_after looked
                self._configtest()
            self.step("reload", True, "skipped (--no-reload): the change takes effect at the next reload" if not self.reload
                      else "Apache is not running: not started; the change takes effect at its next start")
            return
        self._mark("reloaded")
        self.reloaded = True  # after _mark: if the journal update fails, no reload was attempted
        self._prepare_probe()  # after the journal's fsync: its thread would hold the GIL meanwhile
        r = self.service.reload(one_parse=True)
        if not r.ok:
            if not self.tested:  # why did it fail: the configuration, or the reload?
                try:
                    self._configtest()
                except Abort:
                    self.reloaded = False  # a failing configuration is never signalled (see _configtest_after)
                    raise
            self.step("reload", False, r.detail)
            raise Abort("failed", ExitCode.FAILED, f"reload failed: {r.detail}")
        if not r.done:
            self.reloaded = False
            if not self.tested:  # denied: nothing tested it
                self._configtest()
            self.step("reload", True, f"not done ({r.detail}): the change is written and tested and takes effect "
                                      "when Apache is next reloaded or started")
            return
        if not self.tested:
            self.step("configtest", True, f"ok (tested by the reload before it signalled Apache: {r.tested_by})")
        self.step("reload", True, f"{r.how}: {r.detail}")

    def _target(self) -> Optional[Tuple[str, int, str]]:
        """Where the live check connects: worked out once (it may read /proc/net/tcp) for the journal and the probe."""
        if self.target is None and self.assessment is not None:
            listening = self.listening.result() if self.listening is not None else None
            self.target = probe_target(self.assessment, listening)
        return self.target

    def _probe_wanted(self) -> bool:
        return self.do_probe and self.op != "restore" and self._target() is not None

    def _prepare_probe(self) -> None:
        """Start the live check's preparation (`livecheck.Preparation`) in a thread while the reload runs.

        The reload is a child process the main thread only waits for: the
        imports of the probe stack, ``openssl req`` and the client contexts
        run meanwhile. `_probe` takes the result (a failure in the thread is
        raised there, where the check would have raised it); the caller
        closes it on every path.
        """
        if self._probe_wanted() and self.assessment is not None:
            where = (self.assessment.filename, self.assessment.line)

            def make() -> Any:
                from . import livecheck  # the probe stack: only when probing

                return livecheck.Preparation(*where)
            self.live_prep = Background(make)

    def _probe(self) -> None:
        self._checkpoint("probe")
        target = self._target()
        if not self._probe_wanted() or not self.reloaded or target is None:
            why = "--no-probe" if not self.do_probe else ("restore" if self.op == "restore" else "Apache not reloaded")
            self.step("probe", True, f"skipped ({why})")
            return
        host, port, sni = target
        from . import livecheck  # the probe stack: only when probing
        prepared = self.live_prep.result() if self.live_prep is not None else None
        live = livecheck.run_for_vhost("apply" if self.revert_to_policy else self.op, self.assessment, host, port, sni,
                                       prepared=prepared)
        v = live.verdict
        self.probe_results = [s.to_json() for s in live.seen]
        self.gate_verdict = live.to_json()
        self.step("probe", v.ok, f"https://{sni}:{port}{PROBE_PATH} via {host}: {v.summary}"
                                 + ("" if v.ok else ": " + "; ".join(v.problems)))
        for e in v.effects:
            self.step("effect", True, f"known effect of the policy: {e.line()}")
        for m in v.mitigations:
            self.step("effect", True, f"mitigation: {m}")
        if not v.ok:
            raise Abort("failed", ExitCode.FAILED, "live check failed: " + "; ".join(v.problems))

    # -- the one rollback path ------------------------------------------------
    def _rollback(self, reason: str) -> Outcome:
        """Undo through the reverter (signals stay deferred: nothing interrupts the way back)."""
        assert self.reverter is not None and self.file
        undo = self.reverter.undo(self.reloaded, self.step)
        if self.live_new is not None:
            self._rejected(reason)
        if not undo.ok:
            return self._outcome("unrestored", ExitCode.UNRESTORED,
                                 f"{reason}; the rollback could not finish: {undo.problem}. Run by hand: {undo.manual}")
        if self.reloaded:
            live = "the previous configuration is active again" + (f" ({undo.detail})" if undo.detail else "")
        elif apachectl.is_running():
            live = "Apache was not reloaded: the previous configuration stayed active"
        else:
            live = "Apache is not running: the previous configuration is on disk for its next start"
        return self._outcome("rolled-back", ExitCode.FAILED, f"{reason}; rolled back: {live}")


def recover(store: Store, step: Callable[[str, bool, str], None], defer: bool = True,
            service: Optional[apachectl.ServiceControl] = None) -> Optional[Outcome]:
    """Finish the story of a run that died (`reverter.recover`), as an Outcome; None when there was none.

    exit_code is UNRESTORED when a person must look (an untrusted journal
    included: it is never acted on), with the commands to run. Signals are
    deferred throughout (defer=False: the caller already defers them).
    """
    with interrupts.Deferred(active=defer):
        try:
            undo = reverter.recover(store, step, service)
        except JournalUnreadable as exc:
            msg = (f"{exc}; not acting on it, nothing changed. Look at it, then run: "
                   f"{display.command([TOOL, 'discard-journal'])} (keeps a copy)")
            step("recover", False, msg)
            return Outcome("journal-unreadable", ExitCode.UNRESTORED, message=msg)
    if undo is None:
        return None
    if not undo.ok:
        return Outcome("unrestored", ExitCode.UNRESTORED,
                       message=f"{undo.detail}; {undo.problem}. Run by hand: {undo.manual}")
    return Outcome("recovered", ExitCode.OK, message=undo.detail)
