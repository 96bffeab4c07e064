"""Everything this tool keeps on disk: backups, saved blocks, the journal, the lock.

All of it lives in the state dir (``/var/lib/dataone-cn-sslverify``, 0700,
files 0600), never under ``/etc/apache2`` where Apache could load it.

* ``backups/ID`` + ``backups/ID.json``: a full copy of a vhost file taken
  before each change, with its path, mode, owner, size and sha256. The
  newest `KEEP_BACKUPS` per vhost file are kept.
* ``blocks/KEY.json``: the exact original client-verification block of a
  vhost file, so ``revert`` can put it back even after unrelated edits.
* ``journal.json``: written (and fsynced) *before* a vhost is touched and
  removed at commit; if it is found by a later run, the earlier one died and
  `transaction` recovers from it.
* ``lock``: an ``flock`` that the kernel releases when the holder dies, with
  the holder's pid and command inside, for the message a waiting run prints.

`cas_write` is the only way a vhost is written: a temp file created with
``O_EXCL|O_NOFOLLOW`` in the same directory, fsync, then -- only if the
target still holds the bytes the change was planned from -- rename over the
target and fsync the directory; mode, owner and group kept; a symlink is
followed and its target replaced.

Nothing here trusts the disk: the state dir must be owned by the effective
user and writable by nobody else (`check_state_dir`), files in it are
created without following links, and backup records are only believed when
their names follow the naming scheme and their files lie in ``backups/``.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from typing import Any, Callable, Dict, List, Optional

from . import display
from .errors import Refused, Unrestored
from .records import asdict, dataclass

KEEP_BACKUPS = 10
TMP_SUFFIX = ".dataone-cn-sslverify.tmp"
#: ``20261201T215252_123456-apply-cn-ssl.conf``: stamp, operation, file name.
BACKUP_ID = re.compile(r"\A[0-9]{8}T[0-9]{6}_[0-9]{6}-[a-z][a-z-]*-[^/\x00]+\Z")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class ChangedMeanwhile(RuntimeError):
    """The target no longer holds the bytes the change was planned from: nothing written."""


class UnsafeStateDir(Refused):
    """The state dir (or a directory above it) could be changed by someone else: refuse to use it."""


class JournalUnreadable(Unrestored):
    """journal.json exists but cannot be believed (corrupt, not a regular file, or naming files we never manage)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"the journal at {path} is unreadable ({why})")
        self.path, self.why = path, why


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(target: str) -> str:
    """The temp file `atomic_write` uses for target (a name Apache's *.conf globs never match)."""
    real = os.path.realpath(target)
    return os.path.join(os.path.dirname(real), "." + os.path.basename(real) + TMP_SUFFIX)


def _open_new(path: str) -> int:
    """Create path for writing; never through a link or over a file someone planted there.

    A leftover of ours (a crash between create and rename) is removed first:
    unlinking a planted symlink removes the link, not what it points to. If
    something is planted again in between, ``O_EXCL`` fails and nothing is written.
    """
    _unlink_quietly(path)
    return os.open(path, _NEW_FILE, 0o600)


def atomic_write(target: str, data: bytes, mode: Optional[int] = None) -> str:
    """Replace the file at target (its symlink target, if a link) atomically; returns the real path."""
    return cas_write(target, data, None, mode=mode)


def cas_write(target: str, data: bytes, basis: Optional[bytes], *, new_file: bool = False,
              mode: Optional[int] = None, private: bool = False) -> str:
    """Compare and swap: replace target with data only if it still holds basis (None: do not compare).

    The temp file is written and fsynced first, so the window between the
    final comparison and the rename is a read and a ``rename(2)``. With
    ``new_file`` the target must not exist (basis is ignored). Raises
    `ChangedMeanwhile` (and writes nothing) when the bytes differ. The new
    file keeps the old one's mode, owner and group (or ``mode`` for a new file).
    A ``private`` file (in the state dir) is never followed: a link planted in
    its place is replaced, not written through; it is always ours, 0600.
    """
    if private:
        real = os.path.abspath(target)
        tmp = os.path.join(os.path.dirname(real), "." + os.path.basename(real) + TMP_SUFFIX)
        st: Optional[os.stat_result] = None
        mode = 0o600
    else:
        real = os.path.realpath(target)
        tmp = temp_path(real)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            st = None
    fd = _open_new(tmp)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if st is not None:
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, st.st_mode & 0o7777)
        elif mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        if new_file:
            if os.path.lexists(real):
                raise ChangedMeanwhile(f"{real} exists now")
        elif basis is not None and _current(real) != basis:
            raise ChangedMeanwhile(f"{real} changed")
        os.rename(tmp, real)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(os.path.dirname(real))
    return real


def _current(path: str) -> Optional[bytes]:
    try:
        return read(path)
    except FileNotFoundError:
        return None


def cas_remove(target: str, basis: bytes) -> None:
    """Remove target only if it still holds basis (a file this tool created); ChangedMeanwhile otherwise."""
    real = os.path.realpath(target)
    if _current(real) != basis:
        raise ChangedMeanwhile(f"{real} changed")
    os.unlink(real)
    _fsync_dir(os.path.dirname(real))


def check_state_dir(root: str) -> None:
    """Refuse a state dir that anyone but us could change (UnsafeStateDir, exit 2, with the fix).

    The dir itself must be owned by the effective user and not writable by
    group or others; each directory above it must be owned by root or the
    effective user and not writable by others unless sticky (``/tmp``), so
    nobody else can swap the dir for another.
    """
    euid = os.geteuid()
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        st = None
    if st is not None:
        fix = display.commands(["chown", f"{euid}:", root], ["chmod", "0700", root])
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise UnsafeStateDir(f"state dir {root} is not a directory (a symlink or a file); nothing changed; "
                                 f"move it away and run again")
        if st.st_uid != euid or st.st_mode & 0o022:
            raise UnsafeStateDir(f"state dir {root} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: "
                                 f"someone else could plant or change backups and the journal; nothing changed. "
                                 f"Check its contents, then: {fix}")
    parent = os.path.dirname(os.path.abspath(root))
    while True:
        pst = os.stat(parent)
        writable = pst.st_mode & 0o002 or (pst.st_mode & 0o020 and pst.st_gid != 0)
        if pst.st_uid not in (0, euid) or (writable and not pst.st_mode & stat.S_ISVTX):
            raise UnsafeStateDir(f"{parent} (above the state dir {root}) can be changed by uid {pst.st_uid} or others "
                                 f"(mode {stat.S_IMODE(pst.st_mode):04o}); nothing changed. Fix: "
                                 + display.command(["chmod", "go-w", parent]))
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@dataclass
class Backup:
    """A full-file copy of a vhost taken before a change."""

    id: str
    path: str  # the vhost file it is a copy of (real path)
    created: float
    size: int
    sha256: str
    mode: int
    uid: int
    gid: int
    op: str
    file: str  # where the copy is stored

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created))

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["mode"] = oct(self.mode)
        d["created"] = self.when
        return d


class LockTimeout(RuntimeError):
    """Another run holds the lock (exit 2)."""


class Store:
    """The state dir and what is in it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.backups_dir = os.path.join(root, "backups")
        self.blocks_dir = os.path.join(root, "blocks")
        self.journal_path = os.path.join(root, "journal.json")
        self.lock_path = os.path.join(root, "lock")
        self._lock_fd: Optional[int] = None

    # -- layout -------------------------------------------------------------
    def ensure(self) -> None:
        """Create the state dir tree (0700); refuse one that someone else could change."""
        check_state_dir(self.root)
        for d in (self.root, self.backups_dir, self.blocks_dir):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                if d != self.root:
                    check_state_dir(d)

    def _write_private(self, path: str, data: bytes) -> None:
        cas_write(path, data, None, private=True)

    def _read_private(self, path: str) -> bytes:
        """A file of ours, never read through a link planted in its place."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read()

    # -- lock ---------------------------------------------------------------
    def lock(self, command: str, timeout: float, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Take the exclusive lock, waiting at most timeout seconds; LockTimeout names the holder."""
        self.ensure()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeStateDir(f"{self.lock_path} is not a regular file; nothing changed")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline or interrupted():
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
                    os.close(fd)
                    waited = "interrupted while waiting" if interrupted() else f"waited {timeout:.0f}s"
                    raise LockTimeout(f"another dataone-cn-sslverify run holds {self.lock_path} ({holder}); {waited}")
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {command}, since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- journal ------------------------------------------------------------
    def write_journal(self, entry: Dict[str, Any]) -> None:
        self._write_private(self.journal_path, json.dumps(entry, indent=1, sort_keys=True).encode())

    def read_journal(self) -> Optional[Dict[str, Any]]:
        """The journal as a dict, None when there is none; JournalUnreadable when it cannot be believed."""
        try:
            raw = self._read_private(self.journal_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalUnreadable(self.journal_path, exc.strerror or str(exc)) from None
        try:
            j = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            raise JournalUnreadable(self.journal_path, f"not JSON: {exc}") from None
        if not isinstance(j, dict):
            raise JournalUnreadable(self.journal_path, "not a JSON object")
        return j

    def clear_journal(self) -> None:
        if os.path.lexists(self.journal_path):
            os.unlink(self.journal_path)
            _fsync_dir(self.root)

    def discard_journal(self) -> Optional[str]:
        """Move the journal aside (kept as ``journal.json.discarded-STAMP``); returns the copy's path."""
        if not os.path.lexists(self.journal_path):
            return None
        keep = f"{self.journal_path}.discarded-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        os.rename(self.journal_path, keep)
        _fsync_dir(self.root)
        return keep

    # -- backups ------------------------------------------------------------
    def backup(self, path: str, data: bytes, op: str) -> Backup:
        """Keep a full copy of path's current bytes (data) with its metadata."""
        self.ensure()
        real = os.path.realpath(path)
        st = os.stat(real)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:].replace(".", "_")
        bid = f"{stamp}-{op}-{os.path.basename(real)}"
        b = Backup(id=bid, path=real, created=now, size=len(data), sha256=sha256(data), mode=st.st_mode & 0o7777,
                   uid=st.st_uid, gid=st.st_gid, op=op, file=os.path.join(self.backups_dir, bid))
        self._write_private(b.file, data)
        meta = asdict(b)
        try:
            self._write_private(b.file + ".json", json.dumps(meta, indent=1, sort_keys=True).encode())
        except BaseException:
            # A copy without its metadata is invisible to `backups`/`prune` and would stay
            # forever (on a full disk, taking the space of the next try): remove it.
            _unlink_quietly(b.file)
            raise
        return b

    def backups(self, path: Optional[str] = None) -> List[Backup]:
        """Backups, newest first; only those of path (real path) when given.

        A record is believed only when its id follows the naming scheme, its
        file name is that id inside ``backups/`` and the vhost path is absolute;
        anything else in the directory is ignored (and never deleted).
        """
        out: List[Backup] = []
        if not os.path.isdir(self.backups_dir):
            return out
        for name in os.listdir(self.backups_dir):
            if not name.endswith(".json") or not BACKUP_ID.match(name[:-5]):
                continue
            try:
                b = Backup(**json.loads(self._read_private(os.path.join(self.backups_dir, name)).decode()))
            except (OSError, ValueError, TypeError):
                continue
            if not self.valid_record(b) or b.id != name[:-5]:
                continue
            if path is None or b.path == os.path.realpath(path):
                out.append(b)
        return sorted(out, key=lambda b: (b.created, b.id), reverse=True)

    def valid_record(self, b: Backup) -> bool:
        """Does this record describe one of our backups (not a path someone wrote into a JSON file)?"""
        return (isinstance(b.id, str) and bool(BACKUP_ID.match(b.id)) and b.file == os.path.join(self.backups_dir, b.id)
                and isinstance(b.path, str) and os.path.isabs(b.path) and isinstance(b.sha256, str)
                and bool(re.match(r"\A[0-9a-f]{64}\Z", b.sha256)))

    def is_backup_file(self, path: str) -> bool:
        """A path inside backups/ whose name follows the naming scheme."""
        return os.path.dirname(path) == self.backups_dir and bool(BACKUP_ID.match(os.path.basename(path)))

    def get_backup(self, bid: str) -> Backup:
        for b in self.backups():
            if b.id == bid:
                return b
        raise KeyError(f"no backup {bid!r} in {self.backups_dir} (see `dataone-cn-sslverify backups`)")

    def verified_bytes(self, b: Backup) -> bytes:
        """The backup's bytes, refusing a copy whose hash no longer matches."""
        if not self.valid_record(b):
            raise ValueError(f"backup record {b.id!r} is not one of ours; not using it")
        data = self._read_private(b.file)
        if sha256(data) != b.sha256:
            raise ValueError(f"{b.file}: backup is corrupt (sha256 mismatch)")
        return data

    def read_backup_file(self, path: str) -> bytes:
        """The bytes of one of our backup files (refusing any other path a record may name)."""
        if not self.is_backup_file(path):
            raise OSError(0, f"{path} is not a backup of this tool")
        return self._read_private(path)

    def prune(self, path: str, keep: int = KEEP_BACKUPS) -> List[str]:
        """Delete all but the newest keep backups of path; returns the ids removed."""
        removed = []
        for b in self.backups(path)[keep:]:
            own = os.path.join(self.backups_dir, b.id)  # from the validated id, never from the record's "file"
            if not self.is_backup_file(own):
                continue
            for f in (own, own + ".json"):
                _unlink_quietly(f)
            removed.append(b.id)
        return removed

    # -- saved original blocks ---------------------------------------------
    def _block_file(self, path: str) -> str:
        real = os.path.realpath(path)
        return os.path.join(self.blocks_dir, f"{hashlib.sha256(real.encode()).hexdigest()[:16]}-{os.path.basename(real)}.json")

    def save_block(self, path: str, block: str, variant: str, **extra: Any) -> str:
        self.ensure()
        f = self._block_file(path)
        rec = dict(extra, path=os.path.realpath(path), variant=variant, block=block, saved=time.time())
        self._write_private(f, json.dumps(rec, indent=1, sort_keys=True).encode())
        return f

    def load_block(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            rec = json.loads(self._read_private(self._block_file(path)).decode())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self._block_file(path)}: saved block unreadable ({exc})") from None
        return rec if isinstance(rec, dict) and isinstance(rec.get("block"), str) else None

    def drop_block(self, path: str) -> None:
        _unlink_quietly(self._block_file(path))
