"""The monitor's own small files in the state dir, written safely and read back without trust.

Three caches use it: ``monitor-live.json`` (the ``--live`` verdict, a few
minutes), ``monitor-config.json`` (what the configuration says, for as
long as no file Apache loads changed) and ``monitor-verdict.cache``
(`monitor_fast`: the whole verdict, for as long as nothing it read
changed). They only save work: a cache that is missing, stale, foreign or
malformed is ignored and the work is done again.

Written only in a state dir that is a real directory owned by us and not
writable by group or others; to a fresh random name opened with
``O_CREAT|O_EXCL|O_NOFOLLOW`` (0600), fsynced, renamed into place. Read
only through ``O_NOFOLLOW``, as a regular file with one link, owned by us,
not writable by group or others, small, holding one JSON object of the
expected version and key; the caller then checks every field's type.

Imports only ``os`` and ``stat`` (``json`` when a JSON cache is used):
`monitor_fast` reads through it on every run.
"""

import os
import stat

MAX_BYTES = 262144


def usable_dir(state_dir: str) -> bool:
    """Ours to write in: a real directory owned by us, not writable by group or others."""
    try:
        st = os.lstat(state_dir)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def read_private(state_dir: str, name: str, max_bytes: int = MAX_BYTES) -> "Optional[bytes]":
    """The bytes of state_dir/name if it is ours alone (see the module's rules) and small; else None."""
    if not usable_dir(state_dir):
        return None
    try:
        fd = os.open(os.path.join(state_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022
                or st.st_size > max_bytes or st.st_nlink != 1):
            return None
        chunks = []
        got = 0
        while got <= max_bytes:
            b = os.read(fd, max_bytes + 1 - got)
            if not b:
                break
            chunks.append(b)
            got += len(b)
    except OSError:
        return None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    return raw if len(raw) <= max_bytes else None


def read_doc(state_dir: str, name: str, version: int, key: str) -> "Optional[Dict[str, Any]]":
    """The JSON object in state_dir/name if it passes every check and carries version and key; else None."""
    import json

    raw = read_private(state_dir, name)
    if raw is None:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != version or doc.get("key") != key:
        return None
    return doc


def write_doc(state_dir: str, name: str, doc: "Dict[str, Any]") -> bool:
    """Store doc as JSON in state_dir/name (`write_private`); False when not possible."""
    import json

    return write_private(state_dir, name, json.dumps(doc, sort_keys=True).encode())


def write_private(state_dir: str, name: str, data: bytes, max_bytes: int = MAX_BYTES) -> bool:
    """Store data as state_dir/name (temp O_EXCL|O_NOFOLLOW 0600, fsync, rename); False when not possible."""
    if not usable_dir(state_dir) or len(data) > max_bytes:
        return False
    tmp = os.path.join(state_dir, ".%s.%d.%s.tmp" % (name, os.getpid(), os.urandom(6).hex()))
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


if False:  # type names for checkers only: typing costs a few ms at every monitor run
    from typing import Any, Dict, Optional  # noqa: F401
