"""The one way back: checkpoints of a change, and the undo that rollback and recovery share.

Modelled on certbot's reverter: a change is a checkpoint listing every file
it writes; undoing it is one operation whether the writer is still alive (a
failed config test, reload or live check: `Transaction` calls `Reverter.undo`)
or died (SIGKILL, power loss: the next run calls `recover`, which reads the
checkpoint back from ``journal.json`` and calls the same `Reverter.undo`).

One rule for every file: it is put back only if it still holds exactly the
bytes this tool wrote (sha256 recorded before the write). If it holds the
bytes from before, there is nothing to undo. If it holds anything else,
someone changed it since: nothing is overwritten, the backup and the current
file are both kept, and the result is exit 3 with the exact commands.

After the files, the server: a config test, then a graceful reload (or a
start, if Apache died during the change), then `apachectl.verify_serving`
before anything says the previous configuration is active.

Journal (``journal.json``), written and fsynced before the first write::

    {"version": 2, "op": "apply", "pid": 123, "started": 1700000000.0,
     "running_before": true, "step": "journal" | "written" | "reloaded",
     "target": ["127.0.0.1", 443, "cn.example.org"] | null,
     "files": [{"path": "/etc/apache2/sites-available/cn-ssl.conf",
                "sha256_before": "...", "sha256_written": "...",
                "backup": "/var/lib/dataone-cn-sslverify/backups/ID", "managed": false}]}

``sha256_before``/``backup`` are null for a file the change created (its
undo removes it). A journal from disk is validated before anything is done
with it (`Journal.from_json`, `check_trusted`).
"""

import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import apachectl, display, paths
from .store import ChangedMeanwhile, JournalUnreadable, Store, cas_remove, cas_write, read, sha256, temp_path
from .records import asdict, dataclass, field

VERSION = 2
STEPS = ("journal", "written", "reloaded")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
TOOL = "dataone-cn-sslverify"

#: Files only this tool writes, besides the vhost Apache loads: callables returning a path
#: (evaluated when a journal is checked). Another managed file registers itself here.
MANAGED_FILES: List[Callable[[], str]] = [paths.live_path]  # the policy's live copy (never the policy file)


@dataclass
class FileRecord:
    """One file a change writes: where, what it held, what we wrote, where the old bytes are kept."""

    path: str
    sha256_before: Optional[str]
    sha256_written: str
    backup: Optional[str]
    managed: bool = False


@dataclass
class Journal:
    op: str
    pid: int
    started: float
    running_before: bool
    step: str = "journal"
    target: Optional[Tuple[str, int, str]] = None
    files: List[FileRecord] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["version"] = VERSION
        d["target"] = list(self.target) if self.target else None
        return d

    @classmethod
    def from_json(cls, j: Dict[str, Any], where: str) -> "Journal":
        """Parse and type-check a journal read from disk (JournalUnreadable if it is not one of ours)."""
        if "files" not in j and "file" in j:  # written by version 1: one file
            j = dict(j, files=[{"path": j.get("file"), "sha256_before": j.get("before_sha256"),
                                "sha256_written": j.get("after_sha256"), "backup": j.get("backup")}])
        try:
            files = [FileRecord(path=f["path"], sha256_before=f.get("sha256_before"), sha256_written=f["sha256_written"],
                                backup=f.get("backup"), managed=bool(f.get("managed", False))) for f in j["files"]]
            t = j.get("target")
            target = (str(t[0]), int(t[1]), str(t[2])) if t else None
            journal = cls(op=str(j["op"]), pid=int(j["pid"]), started=float(j.get("started", 0)),
                          running_before=bool(j.get("running_before")), step=str(j.get("step", "journal")),
                          target=target, files=files)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise JournalUnreadable(where, f"not a journal of this tool: {type(exc).__name__}: {exc}") from None
        for f in files:
            if not isinstance(f.path, str) or not os.path.isabs(f.path) or not _is_hash(f.sha256_written) \
                    or (f.sha256_before is not None and not _is_hash(f.sha256_before)) \
                    or (f.sha256_before is None) != (f.backup is None) \
                    or (f.backup is not None and not isinstance(f.backup, str)):
                raise JournalUnreadable(where, f"malformed file record {display.clean(repr(f.path))}")
        if journal.step not in STEPS:
            raise JournalUnreadable(where, f"unknown step {display.clean(journal.step)!r}")
        return journal


def _is_hash(v: Any) -> bool:
    return isinstance(v, str) and bool(_HEX64.match(v))


def check_trusted(journal: Journal, store: Store) -> None:
    """A journal may only restore files this tool changes: the vhost Apache loads, or a managed file.

    Raises JournalUnreadable naming the first record that fails. The bytes
    rule (`Reverter.undo`: only a file holding what we wrote is put back) is
    checked on top of this, per file, at undo time.
    """
    managed = {os.path.realpath(p()) for p in MANAGED_FILES}
    confdir = os.path.realpath(apachectl.confdir())
    loaded: Optional[set] = None
    for f in journal.files:
        if f.backup is not None and not store.is_backup_file(f.backup):
            raise JournalUnreadable(store.journal_path, f"its backup {display.clean(f.backup)} is not a backup of this tool")
        if os.path.realpath(f.path) != f.path:
            raise JournalUnreadable(store.journal_path, f"{display.clean(f.path)} is not a real path")
        if f.path in managed or f.path.startswith(confdir + os.sep):
            continue
        if loaded is None:
            res = apachectl.dump_includes()
            loaded = {os.path.realpath(p) for p in apachectl.parse_dump_includes(res.output)} if res.ok else set()
        if f.path not in loaded:
            raise JournalUnreadable(store.journal_path, f"it names {display.clean(f.path)}, which Apache does not load "
                                                        "and this tool does not manage")


@dataclass
class Undo:
    """What the way back did: ok (all restored, server verified), or the problem and the commands."""

    ok: bool
    detail: str
    problem: str = ""
    manual: str = ""
    restored: List[str] = field(default_factory=list)


def apache_cmd(*args: str) -> List[str]:
    """``apache2ctl ARGS`` as a person must type it for this instance (APACHE_CONFDIR when not the default)."""
    env = [f"{k}={os.environ[k]}" for k in ("APACHE_CONFDIR", "APACHE_ENVVARS") if os.environ.get(k)]
    return (["env"] + env if env else []) + ["apache2ctl"] + list(args)


class Reverter:
    """The checkpoint of one change (its journal) and the only way to undo it."""

    def __init__(self, store: Store, journal: Journal, service: Optional[apachectl.ServiceControl] = None) -> None:
        self.store, self.journal = store, journal
        # How the way back reloads or starts Apache: by hand, or invoke-rc.d in a maintainer script.
        self.service = service or apachectl.BY_HAND

    # -- recording, before and during the change ---------------------------------
    def save(self) -> None:
        """Write the journal (fsynced, through a temp file: the old one stays valid until the rename)."""
        self.store.write_journal(self.journal.to_json())

    def checkpoint(self, path: str, before: Optional[bytes], new: bytes, backup: Optional[str],
                   managed: bool = False) -> FileRecord:
        """Record that path is about to get new (its before bytes kept in backup) and save the journal."""
        rec = FileRecord(os.path.realpath(path), sha256(before) if before is not None else None, sha256(new),
                         backup, managed)
        self.journal.files = [f for f in self.journal.files if f.path != rec.path] + [rec]
        self.save()
        return rec

    def forget(self, path: str) -> None:
        """The write of path did not happen (compare-and-swap refused): drop its record."""
        real = os.path.realpath(path)
        self.journal.files = [f for f in self.journal.files if f.path != real]
        self.save()

    def mark(self, step: str) -> None:
        assert step in STEPS
        self.journal.step = step
        self.save()

    def commit(self) -> None:
        """The change is final: the journal's removal is the commit point."""
        self.store.clear_journal()

    # -- the way back ---------------------------------------------------------------
    def undo(self, reload_needed: bool, report: Callable[[str, bool, str], None], label: str = "rollback",
             reload_if_restored: bool = False) -> Undo:
        """Put every file back that still holds our bytes, then make Apache serve it, verified.

        reload_needed: Apache was reloaded with the change (graceful, or start
        it again if it died). reload_if_restored: also reload when a file was
        put back (recovery: the dead run may have been between write and reload,
        and someone else may have reloaded meanwhile).

        The journal is removed only when all of it worked; otherwise it stays
        (the next run tries again) and the Undo names what to run by hand.
        """
        done: List[str] = []
        restored: List[str] = []
        for f in reversed(self.journal.files):
            problem, manual, what = self._undo_file(f)
            if problem:
                report(label, False, problem)
                return Undo(False, "; ".join(done), problem, manual, restored)
            if what == "restored":
                restored.append(f.path)
            done.append(f"{f.path} {what}")
            report(label, True, f"{f.path} {what}")
        problem, said = self._serve(reload_needed, reload_needed or (reload_if_restored and bool(restored)))
        if said:
            done.append(said)
        if problem:
            cmds = [apache_cmd("configtest")]
            if not apachectl.is_running():
                stale = apachectl.stale_pid_file()
                cmds += ([["rm", "-f", stale]] if stale else []) + [apache_cmd("start")]
            else:
                cmds.append(apache_cmd("graceful"))
            report(label, False, problem)
            return Undo(False, "; ".join(done), problem, display.commands(*cmds), restored)
        if said:
            report(label, True, said)
        self.commit()
        return Undo(True, "; ".join(done), restored=restored)

    def _undo_file(self, f: FileRecord) -> Tuple[str, str, str]:
        """(problem, manual commands, what was done) for one file; problem is "" when it worked."""
        try:
            cur: Optional[bytes] = read(f.path)
        except FileNotFoundError:
            cur = None
        except OSError as exc:
            return self._keep_both(f, f"{f.path} is unreadable ({exc.strerror})")
        h = sha256(cur) if cur is not None else None
        if h == f.sha256_before:
            return "", "", "was not changed" if cur is not None else "was not created"
        if h != f.sha256_written:
            return self._keep_both(f, f"{f.path} was changed by someone else since this tool wrote it; not touching it")
        try:
            if f.backup is None:
                cas_remove(f.path, cur or b"")
                return "", "", "removed (this change had created it)"
            data = self.store.read_backup_file(f.backup)
            if sha256(data) != f.sha256_before:
                return self._keep_both(f, f"backup {f.backup} does not hold the bytes the journal recorded")
            cas_write(f.path, data, cur)
        except ChangedMeanwhile:
            return self._keep_both(f, f"{f.path} was changed by someone else during the rollback; not touching it")
        except OSError as exc:
            return self._keep_both(f, f"could not restore {f.path} ({exc.strerror or exc})")
        return "", "", f"restored from {f.backup}"

    def _keep_both(self, f: FileRecord, why: str) -> Tuple[str, str, str]:
        """Nothing overwritten: say where both versions are and what a person can run."""
        discard = [TOOL, "discard-journal"]
        if f.backup is None:
            manual = display.command(discard)
            return f"{why}; it is left as it is", manual, ""
        manual = (f"compare: {display.command(['diff', '-u', f.backup, f.path])}; to keep the current file: "
                  f"{display.command(discard)}; to put the previous one back: "
                  + display.commands(["cp", "-p", f.backup, f.path], apache_cmd("configtest"), apache_cmd("graceful"),
                                     discard))
        return f"{why}; both versions kept (previous: {f.backup}, current: {f.path})", manual, ""

    def _serve(self, was_reloaded: bool, reload_needed: bool) -> Tuple[str, str]:
        """(problem, what was done) for the server side of the undo."""
        if not reload_needed:
            return "", ""
        ct = apachectl.configtest()
        if not ct.ok:
            return f"the restored configuration fails `apache2ctl configtest`: {ct.first_error}", ""
        target = self.journal.target
        if apachectl.is_running():
            r = self.service.reload()
            if not r.ok:
                return f"reload failed: {r.detail}", ""
            if not r.done:
                return "", f"not reloaded ({r.detail}): Apache loads the restored configuration at its next reload"
            ok, seen = apachectl.verify_serving(target)
            if not ok:
                return f"Apache is not running after the reload: {seen}", ""
            return "", f"reloaded ({r.detail}); {seen}"
        if not (self.journal.running_before and was_reloaded):
            return "", "Apache is not running: left stopped (the previous configuration takes effect at its next start)"
        r = self.service.start()
        ok, seen = apachectl.verify_serving(target)
        if not ok and not apachectl.is_running():
            # A start right after someone's stop can lose the listening ports to the old
            # generation's last children and exit: one more start once they are gone.
            time.sleep(1.0)
            r = self.service.start()
            ok, seen = apachectl.verify_serving(target)
        if not ok:
            return f"Apache is not running: it had stopped during the change and the start ({r.how}) said " \
                   f"{display.clean(r.detail)!r}, but {seen}", ""
        return "", f"Apache had stopped during the change: started again, verified ({seen})"


def load(store: Store, service: Optional[apachectl.ServiceControl] = None) -> Optional[Reverter]:
    """The checkpoint a dead run left, validated; None when there is none (JournalUnreadable if untrusted)."""
    j = store.read_journal()
    if j is None:
        return None
    journal = Journal.from_json(j, store.journal_path)
    check_trusted(journal, store)
    return Reverter(store, journal, service)


def recover(store: Store, report: Callable[[str, bool, str], None],
            service: Optional[apachectl.ServiceControl] = None) -> Optional[Undo]:
    """Finish the story of a run that died: undo its checkpoint (None when there was none)."""
    rv = load(store, service)
    if rv is None:
        return None
    j = rv.journal
    for f in j.files:  # a temp file the dead run left beside a file it was writing
        try:
            os.unlink(temp_path(f.path))
        except OSError:
            pass
    who = f"interrupted {j.op} (pid {j.pid}, {time.strftime('%H:%M:%S', time.localtime(j.started))})"
    undo = rv.undo(j.step == "reloaded", lambda n, ok, d: None, label="recover", reload_if_restored=True)
    if undo.ok:
        what = undo.detail or "nothing to undo"
        undo.detail = f"{who} " + ("rolled back: " if undo.restored or "reloaded" in what else
                                   "had not changed anything: ") + what
        report("recover", True, undo.detail)
    else:
        undo.detail = f"{who}: {undo.detail}" if undo.detail else who
        report("recover", False, f"{undo.detail}; {undo.problem}")
    return undo
