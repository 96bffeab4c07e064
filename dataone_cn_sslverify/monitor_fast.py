"""``monitor`` without ``--live``, answered from a verdict cache while nothing it read has changed.

Why: the monitor runs every minute, and its budget is 3 x the start-up of
``python3 -c pass`` plus the one ``apache2ctl -t -D DUMP_INCLUDES`` it cannot
avoid. The full path (`monitor_observe`, `monitor`, `cli`) spends more time
importing modules (``argparse``, ``re``, ``json``, ``typing``, ``enum``,
``subprocess``, the package's parser) than doing its work. So the full path
records every file it consulted (`Consulted`) and, when the verdict is
deterministic, saves it with the key it depends on (`save`); the next run
(`cached`, called by `entry` before anything heavy is imported) runs the
same dump, stats the same files and, on an exact match, prints the saved
output. Anything else -- no cache, a different key, an unexpected option, a
run holding the lock, an error of any kind -- falls back to the full path.

The key, compared in full (no hash, so no ``hashlib``):

* the cache format, the package and Python versions, euid, egid and
  groups, the ``--vhost`` option, the environment that changes what is
  read (`ENV_KEYS`: ``APACHE_*``, the tool's path overrides);
* the ``apache2ctl`` that runs (`apachecmd`: ``PATH`` counts through it)
  and its dump: exit status 0 and every line of it that lists a file
  Apache loads (`dump_key`: all the full path reads of a clean dump; a
  warning such as ``[so:warn] [pid N] AH01574: module ssl_module is
  already loaded`` carries a time and a pid and would make every run a
  miss);
* for every file the full path consulted -- each file of the dump, the
  vhost, the policy file and its live copy, each state-dir file it read or
  found absent (journal, opt-out, rejected record, saved block, lock), the
  package's own directory -- device, inode, mode, owner, links, size,
  mtime and ctime (of the link and of its target for a symlink), or
  "absent"; of the state dir only what is not a time (the cache's own rename
  changes its times; every name in it that is read is recorded on its own).

Not cached: a broken configuration (the walk then reads files Apache did
not list), a verdict with an UNKNOWN finding (a run in progress, a
permission problem: transient), an internal error, ``--live``, and any run
where a consulted file changed while it ran or was changed less than
`RACY` seconds before it started: a rewrite within the same timestamp tick
and of the same size would be invisible to stat (git's "racily clean"
rule; ctime cannot be set back, so a later change always shows).

The cache file is read with `monitor_cache`'s distrust (``O_NOFOLLOW``, a
regular file with one link, ours, not group/other-writable, bounded) and
parsed strictly (`parse`): anything unexpected is a miss, never an error.

Imports only ``os``, ``sys``, ``stat``, ``fcntl``, ``time``, ``select`` and
the package's import-free `apachecmd` and `monitor_cache` (``-X importtime``:
well under 2 ms); ``subprocess`` only on Python < 3.8 (no ``os.posix_spawn``: `apachecmd.spawn`).
"""

import os
import stat
import sys
import time

from . import __version__, apachecmd, monitor_cache

NAME = "monitor-verdict.cache"
FORMAT = b"1"
MAGIC = b"dataone-cn-sslverify monitor verdict cache\n"
MAX_BYTES = 1 << 20
#: Seconds before a run during which a change makes its files "racy": the verdict is not saved.
RACY = 2.0
#: `paths.DEFAULT_STATE_DIR` (paths imports the policy parser; a unit test keeps the two equal).
DEFAULT_STATE_DIR = "/var/lib/dataone-cn-sslverify"
#: Environment that changes what the configuration means (``${VAR}`` in it, where Apache's files are).
APACHE_ENV_KEYS = ("APACHE_CONFDIR", "APACHE_ENVVARS", "APACHE_RUN_USER", "APACHE_RUN_GROUP", "APACHE_LOG_DIR",
                   "APACHE_RUN_DIR", "APACHE_LOCK_DIR", "APACHE_PID_FILE", "APACHE_ARGUMENTS")
#: The environment the verdict depends on besides the files: that and the tool's paths. Not PATH itself:
#: what it changes is which apache2ctl runs, and that path is in the key (so the Check_MK agent and
#: Nagios through sudo, with different PATHs finding the same apache2ctl, share one cache).
ENV_KEYS = APACHE_ENV_KEYS + ("DATAONE_CN_SSLVERIFY_POLICY", "DATAONE_CN_SSLVERIFY_LIVE",
                              "DATAONE_CN_SSLVERIFY_STATE_DIR")
#: Of those, the ones naming a path: a relative one would depend on the working directory (not in the key).
_PATH_KEYS = ("APACHE_CONFDIR", "APACHE_ENVVARS", "DATAONE_CN_SSLVERIFY_POLICY", "DATAONE_CN_SSLVERIFY_LIVE",
              "DATAONE_CN_SSLVERIFY_STATE_DIR")
#: Kinds of consulted path: a file (all of its stat) or a directory (no times).
FILE, DIR = "f", "d"
_FIELDS = 9  # format, context, apache2ctl, dump, paths, state, nagios, checkmk, json

# ----------------------------------------------------------------------------
# The key (pure but for stat)


def netstring(b: bytes) -> bytes:
    return b"%d:%s," % (len(b), b)


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def context(vhost: "Optional[str]", environ: "Mapping[str, str]", euid: int, egid: int,
            groups: "Sequence[int]") -> bytes:
    """Everything of the key but the files and the dump: format, versions, user, option, environment."""
    parts = [FORMAT, _enc(__version__), b"%x" % sys.hexversion, b"%d" % euid, b"%d" % egid, b" ".join(b"%d" % g for g in sorted(groups)),
             b"-" if vhost is None else b"=" + _enc(vhost)]
    for k in ENV_KEYS:
        v = environ.get(k)
        parts.append(_enc(k) + (b"-" if v is None else b"=" + _enc(v)))
    return b"".join(netstring(p) for p in parts)


def dump_key(output: str) -> str:
    """The lines of a clean dump the full path reads: those listing a file, ``(N) PATH`` or ``(*) PATH``.

    Every line `apachectl.parse_dump_includes` matches starts, after white
    space, with ``(`` and is kept as it is; the rest (the heading, warnings
    with a time stamp and a pid) is not read when the configuration passes.
    """
    return "\n".join(ln for ln in output.splitlines() if ln.lstrip().startswith("("))


def current_context(vhost: "Optional[str]") -> bytes:
    return context(vhost, os.environ, os.geteuid(), os.getegid(), os.getgroups())


def _fields(st: os.stat_result, times: bool) -> str:
    base = "%o %d %d %d %d %d" % (st.st_mode, st.st_uid, st.st_gid, st.st_dev, st.st_ino, st.st_nlink)
    return "%s %d %d %d" % (base, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if times else base


def probe(kind: str, path: str) -> "Tuple[str, List[Tuple[int, int]]]":
    """(token, [(mtime_ns, ctime_ns), ...]) of path: its lstat, and its target's stat when it is a symlink.

    A directory (`DIR`) is recorded without times: only what it is, whose, its mode.
    """
    times = kind == FILE
    stamps = []  # type: List[Tuple[int, int]]
    token = ""
    for follow in (False, True):
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            return token + "absent", stamps
        except OSError as exc:
            return token + "error %s" % exc.errno, stamps
        token += _fields(st, times)
        if times:
            stamps.append((st.st_mtime_ns, st.st_ctime_ns))
        if not stat.S_ISLNK(st.st_mode):
            break
        token += " > "
    return token, stamps


def racy(stamps: "Sequence[Tuple[int, int]]", since: float) -> bool:
    """A change as late as RACY seconds before since (ctime; mtime only near it: a future mtime is no change)."""
    lo, hi = int((since - RACY) * 1e9), int((since + RACY) * 1e9)
    return any(c >= lo or lo <= m <= hi for m, c in stamps)


class Consulted:
    """What the full path read (files, their first stat, the dump): the key of the verdict it reached.

    `add` is called before a file is read (the stat taken then is the one
    recorded); `settled` stats everything again at the end.
    """

    def __init__(self, started: "Optional[float]" = None) -> None:
        self.started = time.time() if started is None else started
        self.entries = {}  # type: Dict[str, Tuple[str, str]]
        self.ctl = None  # type: Optional[str]
        self.dump = None  # type: Optional[str]
        self.add(FILE, os.path.dirname(os.path.abspath(__file__)))  # the code that judges

    def add(self, kind: str, path: str) -> None:
        if path and path not in self.entries:
            self.entries[path] = (kind, probe(kind, path)[0])

    def saw_dump(self, ctl: str, output: str) -> None:
        """The dump ran and exited 0 (only then is the verdict a function of the files)."""
        self.ctl, self.dump = ctl, dump_key(output)

    def settled(self) -> bool:
        """Nothing changed since it was first stat'ed, and nothing changed shortly before the run (`racy`)."""
        for path, (kind, token) in self.entries.items():
            now, stamps = probe(kind, path)
            if now != token or racy(stamps, self.started):
                return False
        return True

    def paths_section(self) -> bytes:
        return b"".join(netstring(_enc(k)) + netstring(_enc(p)) + netstring(_enc(t))
                        for p, (k, t) in sorted(self.entries.items()))


def absolute_inputs(environ: "Mapping[str, str]") -> bool:
    """The path-valued environment is absolute (else the answer depends on the working directory)."""
    return all(not environ.get(k) or environ[k].startswith("/") for k in _PATH_KEYS)


# ----------------------------------------------------------------------------
# The cache file


def serialise(ctx: bytes, ctl: str, dump: str, paths: bytes, state: int, nagios: str, checkmk: str,
              json_text: str) -> bytes:
    fields = [FORMAT, ctx, _enc(ctl), dump.encode("utf-8"), paths, b"%d" % state,
              nagios.encode("utf-8"), checkmk.encode("utf-8"), json_text.encode("utf-8")]
    return MAGIC + b"".join(netstring(f) for f in fields)


def netstrings(data: bytes, start: int = 0, limit: int = 1 << 30) -> "Optional[List[bytes]]":
    """data[start:] as a sequence of netstrings (``LEN:BYTES,``), strictly; None if it is anything else."""
    out = []
    i, n = start, len(data)
    while i < n:
        if len(out) >= limit:
            return None
        colon = data.find(b":", i, i + 9)
        digits = data[i:colon]
        if colon < 0 or not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
            return None
        end = colon + 1 + int(digits)
        if end >= n or data[end:end + 1] != b",":
            return None
        out.append(data[colon + 1:end])
        i = end + 1
    return out


class Doc(object):
    """A parsed cache file."""

    __slots__ = ("context", "ctl", "dump", "paths", "state", "outputs")

    def __init__(self, ctx: bytes, ctl: str, dump: str, paths: "List[Tuple[str, str, str]]", state: int,
                 outputs: "Dict[str, str]") -> None:
        self.context, self.ctl, self.dump, self.paths, self.state, self.outputs = ctx, ctl, dump, paths, state, outputs


def parse(data: bytes) -> "Optional[Doc]":
    """A cache file's content, or None when it is not exactly what `serialise` writes (never raises)."""
    try:
        return _parse(data)
    except (ValueError, TypeError, IndexError):  # UnicodeDecodeError is a ValueError
        return None


def _parse(data: bytes) -> "Optional[Doc]":
    if not isinstance(data, bytes) or len(data) > MAX_BYTES or not data.startswith(MAGIC):
        return None
    f = netstrings(data, len(MAGIC), _FIELDS)
    # UNKNOWN (3) is never saved: a file claiming it is not ours
    if f is None or len(f) != _FIELDS or f[0] != FORMAT or f[5] not in (b"0", b"1", b"2"):
        return None
    flat = netstrings(f[4])
    if flat is None or not flat or len(flat) % 3:
        return None
    paths = []
    for i in range(0, len(flat), 3):
        kind, path, token = (x.decode("utf-8", "surrogateescape") for x in flat[i:i + 3])
        if kind not in (FILE, DIR) or not path.startswith("/") or "\0" in path:
            return None
        paths.append((kind, path, token))
    outputs = {"nagios": f[6].decode("utf-8"), "checkmk": f[7].decode("utf-8"), "json": f[8].decode("utf-8")}
    return Doc(f[1], f[2].decode("utf-8", "surrogateescape"), f[3].decode("utf-8"), paths, int(f[5]), outputs)


# ----------------------------------------------------------------------------
# Saving (the full path)


def save(seen: Consulted, state_dir: str, vhost: "Optional[str]", state: int, nagios: str, checkmk: str,
         json_text: str) -> bool:
    """Save the verdict the full path reached from what seen records; False when it must not be cached.

    The caller decides that the verdict is deterministic (no UNKNOWN
    finding, no internal error, not ``--live``); this checks the rest: the
    dump ran cleanly, every input is an absolute path, and nothing changed
    during the run or shortly before it (`Consulted.settled`).
    """
    if seen.dump is None or seen.ctl is None or state not in (0, 1, 2):
        return False
    if not absolute_inputs(os.environ) or not (vhost is None or vhost.startswith("/")):
        return False
    if not seen.ctl.startswith("/") or not all(p.startswith("/") for p in seen.entries):
        return False
    if not seen.settled():
        return False
    try:
        data = serialise(current_context(vhost), seen.ctl, seen.dump, seen.paths_section(), state, nagios,
                         checkmk, json_text)
    except UnicodeEncodeError:  # a lone surrogate in an output: it could not be printed back as it was
        return False
    return len(data) <= MAX_BYTES and monitor_cache.write_private(state_dir, NAME, data, MAX_BYTES)


# ----------------------------------------------------------------------------
# The fast path


def options(argv: "Sequence[str]") -> "Optional[Tuple[str, bool, Optional[str]]]":
    """(format, --json, --vhost) of a ``monitor`` command line the fast path answers exactly as `cli` would; else None.

    Accepted: ``monitor``; ``--format nagios|checkmk`` after it (``--format=X``
    too); ``--json``, ``--verbose``/``-v`` and ``--vhost /ABSOLUTE`` before or
    after it. Anything else (``--live``, ``--help``, an abbreviation, a
    repeated value option, ``--``) is left to argparse in the full path.
    """
    fmt = vhost = None  # type: Optional[str]
    as_json = command = False
    i = 0
    while i < len(argv):
        a = argv[i]
        value = None  # type: Optional[str]
        name = a
        if a.startswith("--") and "=" in a:
            name, value = a.split("=", 1)
        if name in ("--format", "--vhost"):
            if value is None:
                if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                    return None
                i += 1
                value = argv[i]
            if name == "--format":
                if fmt is not None or not command or value not in ("nagios", "checkmk"):
                    return None
                fmt = value
            else:
                if vhost is not None or not value.startswith("/"):
                    return None
                vhost = value
        elif a == "monitor" and not command:
            command = True
        elif a == "--json":
            as_json = True
        elif a not in ("--verbose", "-v"):
            return None
        i += 1
    return (fmt or "nagios", as_json, vhost) if command else None


def cached(argv: "Sequence[str]") -> "Optional[Tuple[str, int]]":
    """(what to print, exit status) when the saved verdict still holds for this command line; else None.

    Never raises for what it finds on disk: every surprise is a miss, and
    the caller runs the full path.
    """
    opts = options(argv)
    if opts is None or not absolute_inputs(os.environ):
        return None
    fmt, as_json, vhost = opts
    state_dir = os.environ.get("DATAONE_CN_SSLVERIFY_STATE_DIR") or DEFAULT_STATE_DIR
    doc = _read_under_shared_lock(state_dir, vhost)
    if doc is None:
        return None
    ctl = apachecmd.apache2ctl()
    if ctl is None or ctl != doc.ctl:
        return None
    ran = run_dump(ctl)
    if ran is None or ran[0] != 0 or dump_key(ran[1].decode("utf-8", "replace")) != doc.dump:
        return None
    text = doc.outputs["json" if as_json else fmt]
    return text, 0 if fmt == "checkmk" else doc.state


def _read_under_shared_lock(state_dir: str, vhost: "Optional[str]") -> "Optional[Doc]":
    """The cache, if it matches the context and every recorded file, read while no run holds the lock."""
    import fcntl

    try:
        fd = os.open(os.path.join(state_dir, "lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1  # no run ever took it (the full path does not wait either)
    except OSError:
        return None
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return None  # a run holds it: the full path says "busy"
        raw = monitor_cache.read_private(state_dir, NAME, MAX_BYTES)
        doc = parse(raw) if raw is not None else None
        if doc is None or doc.context != current_context(vhost):
            return None
        for kind, path, token in doc.paths:
            if probe(kind, path)[0] != token:
                return None
        return doc
    finally:
        if fd >= 0:
            os.close(fd)  # releases the flock


def run_dump(ctl: str) -> "Optional[Tuple[int, bytes]]":
    """Run ``ctl -t -D DUMP_INCLUDES`` as `apachectl.dump_includes` does: (exit status, stdout and stderr merged).

    Started by `apachecmd.spawn` (stdin /dev/null, stdout and stderr one
    pipe), read to the end. None when it could not run or did not finish
    within `apachecmd.TIMEOUT`.
    """
    import select

    argv = [ctl] + list(apachecmd.DUMP_ARGS)
    r, w = os.pipe()
    try:
        pid = apachecmd.spawn(argv, apachecmd.environment(), w)
    except OSError:
        os.close(r)
        os.close(w)
        return None
    os.close(w)
    chunks = []
    deadline = time.monotonic() + apachecmd.TIMEOUT
    poller = select.poll()
    poller.register(r, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return None
            if not poller.poll(left * 1000):
                continue
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return code, b"".join(chunks)


if False:  # type names for checkers only: importing typing costs a few ms at every monitor run
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple  # noqa: F401
