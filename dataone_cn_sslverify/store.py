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

`atomic_write` is the only way a vhost is written: temp file in the same
directory, fsync, rename over the target, fsync the directory; mode, owner
and group kept; a symlink is followed and its target replaced.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

KEEP_BACKUPS = 10
TMP_SUFFIX = ".dataone-cn-sslverify.tmp"


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


def atomic_write(target: str, data: bytes, mode: Optional[int] = None) -> str:
    """Replace the file at target (its symlink target, if a link) atomically; returns the real path.

    The new file keeps the old one's mode, owner and group (or ``mode`` for a new file).
    """
    real = os.path.realpath(target)
    tmp = temp_path(real)
    try:
        st: Optional[os.stat_result] = os.stat(real)
    except FileNotFoundError:
        st = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
        os.rename(tmp, real)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(os.path.dirname(real))
    return real


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
        """Create the state dir tree, root-only (0700)."""
        for d in (self.root, self.backups_dir, self.blocks_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)

    def _write_private(self, path: str, data: bytes) -> None:
        atomic_write(path, data, mode=0o600)
        os.chmod(path, 0o600)

    # -- lock ---------------------------------------------------------------
    def lock(self, command: str, timeout: float) -> None:
        """Take the exclusive lock, waiting at most timeout seconds; LockTimeout names the holder."""
        self.ensure()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
                    os.close(fd)
                    raise LockTimeout(f"another dataone-cn-sslverify run holds {self.lock_path} ({holder}); "
                                      f"waited {timeout:.0f}s")
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
        try:
            with open(self.journal_path, "rb") as f:
                return json.loads(f.read().decode())
        except FileNotFoundError:
            return None

    def clear_journal(self) -> None:
        if os.path.exists(self.journal_path):
            os.unlink(self.journal_path)
            _fsync_dir(self.root)

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
        """Backups, newest first; only those of path (real path) when given."""
        out = []
        if not os.path.isdir(self.backups_dir):
            return out
        for name in os.listdir(self.backups_dir):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.backups_dir, name), "rb") as f:
                    b = Backup(**json.loads(f.read().decode()))
            except (OSError, ValueError, TypeError):
                continue
            if path is None or b.path == os.path.realpath(path):
                out.append(b)
        return sorted(out, key=lambda b: (b.created, b.id), reverse=True)

    def get_backup(self, bid: str) -> Backup:
        for b in self.backups():
            if b.id == bid:
                return b
        raise KeyError(f"no backup {bid!r} in {self.backups_dir} (see `dataone-cn-sslverify backups`)")

    def verified_bytes(self, b: Backup) -> bytes:
        """The backup's bytes, refusing a copy whose hash no longer matches."""
        data = read(b.file)
        if sha256(data) != b.sha256:
            raise ValueError(f"{b.file}: backup is corrupt (sha256 mismatch)")
        return data

    def prune(self, path: str, keep: int = KEEP_BACKUPS) -> List[str]:
        """Delete all but the newest keep backups of path; returns the ids removed."""
        removed = []
        for b in self.backups(path)[keep:]:
            for f in (b.file, b.file + ".json"):
                _unlink_quietly(f)
            removed.append(b.id)
        return removed

    # -- the policy snippet Apache last loaded -------------------------------
    @property
    def snippet_path(self) -> str:
        return os.path.join(self.root, "snippet.json")

    def record_snippet(self, path: str, data: bytes) -> None:
        """Keep the snippet bytes the live configuration includes (to detect and undo edits)."""
        self.ensure()
        rec = {"path": path, "sha256": sha256(data), "data": data.decode("latin-1"), "saved": time.time()}
        self._write_private(self.snippet_path, json.dumps(rec, indent=1, sort_keys=True).encode())

    def snippet_record(self) -> Optional[Dict[str, Any]]:
        """{"path", "sha256", "data": bytes} as last recorded, or None."""
        try:
            with open(self.snippet_path, "rb") as f:
                rec = json.loads(f.read().decode())
            rec["data"] = rec["data"].encode("latin-1")
            return rec
        except (FileNotFoundError, KeyError, ValueError):
            return None

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
            with open(self._block_file(path), "rb") as f:
                return json.loads(f.read().decode())
        except FileNotFoundError:
            return None

    def drop_block(self, path: str) -> None:
        _unlink_quietly(self._block_file(path))
