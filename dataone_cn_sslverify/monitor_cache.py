"""The monitor's own small files in the state dir, written safely and read back without trust.

Two caches use it: ``monitor-live.json`` (the ``--live`` verdict, a few
minutes) and ``monitor-config.json`` (what the configuration says, for as
long as no file Apache loads changed). Both only save work: a cache that is
missing, stale, foreign or malformed is ignored and the work is done again.

Written only in a state dir that is a real directory owned by us and not
writable by group or others; to a fresh random name opened with
``O_CREAT|O_EXCL|O_NOFOLLOW`` (0600), fsynced, renamed into place. Read
only through ``O_NOFOLLOW``, as a regular file with one link, owned by us,
not writable by group or others, small, holding one JSON object of the
expected version and key; the caller then checks every field's type.
"""

import json
import os
import stat
from typing import Any, Dict, Optional

MAX_BYTES = 262144


def usable_dir(state_dir: str) -> bool:
    """Ours to write in: a real directory owned by us, not writable by group or others."""
    try:
        st = os.lstat(state_dir)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def read_doc(state_dir: str, name: str, version: int, key: str) -> Optional[Dict[str, Any]]:
    """The JSON object in state_dir/name if it passes every check and carries version and key; else None."""
    if not usable_dir(state_dir):
        return None
    try:
        fd = os.open(os.path.join(state_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022
                or st.st_size > MAX_BYTES or st.st_nlink != 1):
            return None
        raw = os.read(fd, MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != version or doc.get("key") != key:
        return None
    return doc


def write_doc(state_dir: str, name: str, doc: Dict[str, Any]) -> bool:
    """Store doc as state_dir/name (temp O_EXCL|O_NOFOLLOW, fsync, rename); False when not possible."""
    if not usable_dir(state_dir):
        return False
    data = json.dumps(doc, sort_keys=True).encode()
    if len(data) > MAX_BYTES:
        return False
    tmp = os.path.join(state_dir, f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(state_dir, name))
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
