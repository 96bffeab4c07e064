"""Apache's one parse, started before the imports: ``apache2ctl -t -D DUMP_INCLUDES`` runs while Python loads the package.

Why a module of its own: ``apply``, ``revert``, ``status`` and ``diff``
each begin with that dump (the files Apache loads, and the before-change
config test), and before it the interpreter spends 40-50 ms importing the
package, on one core. Started first (`start`, from the entry point, with
nothing but ``os`` and ``time`` imported here), Apache parses its
configuration on the other core meanwhile, and `apachectl.dump_includes`
takes the result (`take`) instead of waiting for a run of its own.

A prefetched dump is used only if it is the dump that would run now:

* the same command and environment (``apache2ctl`` found the same way,
  `apachecmd.environment`), asked for once; later dumps always run anew;
* nothing it names changed since it started: every file it lists, and the
  directory of each (a file added next to them), has mtime and ctime
  older than its start by more than `MARGIN` (file times come from the
  kernel's coarse clock; the margin only costs a fresh dump right after an
  edit). Our own runs change the vhost and the live copy, both listed, so a
  run that held the lock meanwhile is always seen; an edit by someone else
  is the same race as between any dump and the change that follows it
  (the reason this need not be stricter: a remote file system whose clock
  lags ours by more than the margin could hide such an edit, which the
  same edit a moment later would do to any dump);
* it succeeded (a failing dump is run again: its list stops where Apache
  stopped), within `apachecmd.TIMEOUT`, and could be read back.

Anything else, and any error here, is a miss: the caller runs the dump
itself, as without this module. Output goes to an unnamed temporary file
(``O_TMPFILE``), so a long dump never blocks on a pipe nobody reads yet.
"""

import os
import time

from . import apachecmd

#: Seconds a listed file (or its directory) must be older than the dump's start: file times come from
#: the kernel's coarse clock, at most one tick (10 ms at HZ=100) behind the one `time.time` reads.
MARGIN = 0.05
#: Commands whose first Apache run is the dump.
COMMANDS = ("apply", "revert", "status", "diff")

_pending = None  # type: Optional[_Started]


class _Started(object):
    """One dump in flight: its process, its output file, what ran, and when."""

    def __init__(self, pid, fd, argv, env, started):
        # type: (int, int, List[str], Dict[str, str], float) -> None
        self.pid, self.fd, self.argv, self.env, self.started = pid, fd, argv, env, started


def command_of(args):  # type: (Sequence[str]) -> Optional[str]
    """The command a command line runs, when it is one to prefetch for (no ``--vhost``, no help), else None."""
    if any(a in ("-h", "--help", "--version") or a == "--vhost" or a.startswith("--vhost=") for a in args):
        return None  # --vhost: locate reads that file alone, no dump
    words = [a for a in args if not a.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def start(args):  # type: (Sequence[str]) -> bool
    """Start the dump for this command line if it will need one; True if started."""
    global _pending
    if _pending is not None or command_of(args) is None:
        return False
    env = apachecmd.environment()
    exe = apachecmd.apache2ctl()
    if exe is None or not hasattr(os, "O_TMPFILE"):
        return False
    argv = [exe] + list(apachecmd.DUMP_ARGS)
    try:
        fd = os.open(os.environ.get("TMPDIR") or "/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    started = time.time()
    try:
        pid = apachecmd.spawn(argv, env, fd)
    except OSError:
        os.close(fd)
        return False
    _pending = _Started(pid, fd, argv, env, started)
    return True


def take(argv, env):  # type: (Sequence[str], Dict[str, str]) -> Optional[Tuple[Optional[int], bytes]]
    """(exit status, output bytes) of the prefetched dump if it is the one asked for and still true; else None.

    Consumes it: only the first dump of a run can be the prefetched one.
    """
    global _pending
    got, _pending = _pending, None
    if got is None:
        return None
    try:
        status = _wait(got.pid, got.started + apachecmd.TIMEOUT)
        if status != 0 or list(argv) != got.argv or dict(env) != got.env:
            return None  # a failing dump is run again: its file list stops where Apache stopped
        os.lseek(got.fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            b = os.read(got.fd, 65536)
            if not b:
                break
            chunks.append(b)
        output = b"".join(chunks)
        return (status, output) if unchanged_since(output, got.started) else None
    except OSError:
        return None
    finally:
        os.close(got.fd)


def _wait(pid, deadline):  # type: (int, float) -> Optional[int]
    """The exit status of pid, or None (killed) if it runs past deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        if time.time() > deadline:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
            return None
        time.sleep(0.002)


def listed_files(output):  # type: (bytes) -> List[str]
    """The paths a ``-D DUMP_INCLUDES`` output lists ("  (12) /etc/apache2/ports.conf"), as `apachectl` reads them."""
    out = []
    for line in output.decode("utf-8", "replace").splitlines():
        s = line.strip()
        if s.startswith("(") and ")" in s:
            n, _, rest = s[1:].partition(")")
            if (n == "*" or n.isdigit()) and rest[:1].isspace() and rest.strip():
                out.append(rest.strip())
    return out


def unchanged_since(output, started, margin=MARGIN):  # type: (bytes, float, float) -> bool
    """Did no file the dump lists, nor its directory, change since ``started`` (less ``margin``)?"""
    files = listed_files(output)
    if not files:
        return False
    limit = started - margin
    for p in set(files) | {os.path.dirname(f) for f in files}:
        try:
            st = os.stat(p)
        except OSError:
            return False
        if st.st_mtime >= limit or st.st_ctime >= limit:
            return False
    return True


if False:  # type names for checkers only: importing typing costs milliseconds before the imports this saves
    from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401
