"""The edges of ``monitor``: gather `monitor.Observations` from Apache, the files and the state dir.

One function per observation, so that each can be replaced when the state
it reads changes shape (the seams are named in docs/monitoring.md):

* `located`      -- the CN vhost and its state, from the one
  ``apache2ctl -t -D DUMP_INCLUDES`` run (also the configtest verdict);
* `configuration` -- hazards, replication Locations, who is asked on /cn
  (`monitor_config`, which parses every file Apache loads), cached in the
  state dir while no loaded file changed (`config_key`);
* `read_state`   -- journal, opt-out, snippet status, saved block, read
  under a *shared* lock held only while reading (never the tool's exclusive
  lock, never a write: a run in progress is reported, not waited for long).

Cheap on purpose (it runs every minute): nothing here imports the probe
stack (``ssl``, threads); ``--live`` is `monitor_live`. Each of them records
the files it consults in a `monitor_fast.Consulted` (stat'ed before they
are read): the key under which `save_verdict` caches the verdict for the
next run's fast path.
"""

import errno
import fcntl
import json
import os
import re
import stat
import time
from typing import Dict, Optional, Tuple

from . import apacheconf as ac
from . import apachectl, locate, monitor_cache, monitor_fast, optout, paths, policy
from . import snippet as contract
from .monitor import UNKNOWN, HazardSeen, Observations, Replication, Verdict, format_checkmk, format_nagios
from .store import Store, sha256

#: How long a monitor run waits for a run in progress to release the lock before saying so.
LOCK_WAIT = 2.0
#: Largest state file read (a journal or record is a few hundred bytes; anything huge is not ours).
MAX_STATE_FILE = 1 << 20

_SYNTAX_AT = re.compile(r"[Ss]yntax error on line (\d+) of (.+?):?(?:\s|$)")


_DUMP_LINE = re.compile(r"^\s*(?:\((?:\*|\d+)\)\s+\S|Included configuration files:)")


def config_error(output: str) -> str:
    """What Apache says is wrong, from a failed ``-t -D DUMP_INCLUDES`` run.

    That run lists the files it included before it failed ("(222) .../localized-error-pages.conf"):
    those lines are not the error, whatever words they contain.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not _DUMP_LINE.match(ln)]
    for i, ln in enumerate(lines):
        if re.search(r"\bAH\d{5}\b|[Ss]yntax error|[Ee]rror", ln) and "Could not reliably determine" not in ln:
            return f"{ln} {lines[i + 1]}" if ln.endswith(":") and i + 1 < len(lines) else ln
    return lines[0] if lines else ""


def broken_at(error: str) -> str:
    """FILE:LINE of Apache's "Syntax error on line N of FILE", or "".

    Apache nests them along the Include chain ("... line 146 of apache2.conf:
    Syntax error on line 1 of mods-enabled/qos.load: ..."): the last names the culprit.
    """
    found = list(_SYNTAX_AT.finditer(error or ""))
    return f"{found[-1].group(2)}:{found[-1].group(1)}" if found else ""


# ----------------------------------------------------------------------------
# The vhost


def located(vhost: Optional[str], snippet: str, seen: Optional[monitor_fast.Consulted] = None
            ) -> Tuple[Dict[str, object], Optional[apachectl.Result], Optional[policy.Assessment]]:
    """Run ``apache2ctl -t -D DUMP_INCLUDES`` once; the vhost's fields of `Observations`, and what was found.

    seen records the dump and, before any is read, the files it lists, the
    vhost given, the policy file and its live copy (`monitor_fast`).
    """
    fields: Dict[str, object] = {"snippet_path": snippet}
    try:
        dump = apachectl.dump_includes()
    except FileNotFoundError as exc:
        fields["vhost_problem"] = str(exc)
        return fields, None, None
    fields["config_ok"] = dump.ok
    if seen is not None:
        listed = apachectl.parse_dump_includes(dump.output) if dump.ok else []
        if listed and dump.argv:
            seen.saw_dump(dump.argv[0], dump.output)
        for p in listed + [vhost or "", snippet, paths.live_path()]:
            seen.add(monitor_fast.FILE, p)
    if not dump.ok:
        fields["config_error"] = config_error(dump.output)
        fields["config_broken_at"] = broken_at(str(fields["config_error"]))
    try:
        loc = locate.locate(vhost, snippet, dump=dump)
        a = locate.choose(loc)
    except (locate.NotFound, policy.PolicyError, ac.ConfigSyntaxError, FileNotFoundError) as exc:
        fields["vhost_problem"] = str(exc)
        return fields, dump, None
    fields.update(vhost_state=a.state, vhost_label=a.state_label, vhost_file=a.filename,
                  vhost_where=f"{a.filename}:{a.line}")
    if a.state == "unrecognised":
        fields["vhost_problem"] = a.reason or f"{a.filename}:{a.line}: unrecognised client-verification block"
    return fields, dump, a


# ----------------------------------------------------------------------------
# The configuration as Apache loads it (cached while no loaded file changes)

CONFIG_CACHE = "monitor-config.json"
CONFIG_VERSION = 1
#: Environment that changes what the configuration means (``${VAR}`` in it, where Apache's files are).
_ENV_KEYS = monitor_fast.APACHE_ENV_KEYS


def config_key(dump_output: str, a: policy.Assessment, snippet: str) -> Optional[str]:
    """What the configuration analysis depends on: every file Apache loads (identity, size, times), the environment.

    None when it cannot be told (Apache listed no file, one cannot be
    stat'ed) or a file changed less than `monitor_fast.RACY` seconds ago
    (its next same-size rewrite in the same timestamp tick would keep the
    key): then nothing is cached.
    """
    from . import __version__

    files = apachectl.parse_dump_includes(dump_output)
    if not files:
        return None
    stats = []
    now = time.time()
    for p in files + [a.filename, snippet]:
        try:
            st = os.stat(p)
        except OSError:
            return None
        if monitor_fast.racy([(st.st_mtime_ns, st.st_ctime_ns)], now):
            return None  # changed within the same second: a same-size rewrite could go unseen by stat
        stats.append([p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    env = [os.environ.get(k, "") for k in _ENV_KEYS]
    return sha256(json.dumps([__version__, CONFIG_VERSION, a.filename, a.line, snippet, env, stats]).encode())


def _strs(x: object, n: int) -> bool:
    return isinstance(x, list) and len(x) == n and all(isinstance(v, str) and len(v) < 4096 for v in x)


def _cached_fields(doc: Optional[Dict[str, object]]) -> Optional[Dict[str, object]]:
    """The analysis fields of a cache document, if every one has its type; else None."""
    f = doc.get("fields") if doc is not None else None
    if not isinstance(f, dict):
        return None
    ints = [f.get(k) for k in ("browsers_asked", "browsers_total", "api_asked", "api_total")]
    hz, rep = f.get("hazards"), f.get("replication")
    if (not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 10000 for i in ints)
            or not isinstance(f.get("tls12_only_intended"), bool)
            or not isinstance(hz, list) or len(hz) > 100 or not all(_strs(h, 4) for h in hz)
            or not isinstance(rep, list) or len(rep) > 100
            or not all(isinstance(r, list) and len(r) == 5 and _strs(r[:2] + r[3:], 4) and isinstance(r[2], bool)
                       for r in rep)):
        return None
    out = dict(f)
    out["hazards"] = tuple(HazardSeen(*h) for h in hz)
    out["replication"] = tuple(Replication(*r) for r in rep)
    return out


def configuration(a: policy.Assessment, snippet: str, dump: apachectl.Result, state_dir: str) -> Dict[str, object]:
    """Hazards, replication Locations and who is asked on /cn: from the cache when no loaded file changed."""
    key = config_key(dump.output, a, snippet) if dump.ok else None
    if key is not None:
        got = _cached_fields(monitor_cache.read_doc(state_dir, CONFIG_CACHE, CONFIG_VERSION, key))
        if got is not None:
            return got
    from .monitor_config import analyse  # the parse of every loaded file: only when something changed

    fields = analyse(a, snippet, dump.ok, config_error(dump.output) if not dump.ok else "")
    if key is not None:
        doc = dict(fields)
        doc["hazards"] = [[h.id, h.title, h.where, h.fix] for h in fields["hazards"]]  # type: ignore[attr-defined]
        doc["replication"] = [[r.path, r.where, r.open, r.by, r.by_file] for r in fields["replication"]]  # type: ignore[attr-defined]
        monitor_cache.write_doc(state_dir, CONFIG_CACHE, {"version": CONFIG_VERSION, "key": key, "fields": doc})
    return fields


# ----------------------------------------------------------------------------
# The state dir (read only, under a shared lock)


def _read_small(path: str) -> bytes:
    """A state file's bytes: never through a symlink, only a regular file, bounded."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_STATE_FILE:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes")
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def journal_state(store: Store) -> Tuple[str, str]:
    """("none" | "pending" | "corrupt" | "unknown", detail) of the journal an interrupted change leaves.

    Judged by the undo path's own parser (`reverter.Journal.from_json`), imported only when
    a journal is there: what it would refuse to act on is "corrupt" here too.
    """
    p = store.journal_path
    try:
        raw = _read_small(p)
    except FileNotFoundError:
        return "none", ""
    except PermissionError as exc:
        return "unknown", f"{p}: {exc.strerror}"
    except OSError as exc:
        return "corrupt", f"{p}: {exc.strerror or exc}"
    from .reverter import Journal
    from .store import JournalUnreadable

    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        j = Journal.from_json(doc, p)
    except (ValueError, UnicodeDecodeError, JournalUnreadable) as exc:
        return "corrupt", f"{p}: {exc}"
    return "pending", f"{p}: {j.op} of {', '.join(f.path for f in j.files) or 'no file'}"


def optout_state(state_dir: str) -> Optional[str]:
    """The administrator's opt-out ("disabled by the administrator (...)"), or None.

    The record and its reader belong to the opt-out module (``optout``).
    """
    rec = optout.read(state_dir)
    return rec.describe() if rec is not None else None


def snippet_status_of(line: str) -> Tuple[str, str]:
    """The live-copy module's status line (``snippet.describe``) as (status, detail) for the verdict."""
    if line.startswith("live"):
        return "live", ""
    for prefix, status in (("edited, rejected: ", "rejected"), ("not live; rejected: ", "rejected")):
        if line.startswith(prefix):
            return status, line[len(prefix):]
    if line.startswith("edited, not live yet"):
        return "edited", ""
    return "edited", line  # not live yet, a live copy edited by hand, the policy file missing: apply says more


def snippet_state(store: Store, snippet: str) -> Tuple[str, str]:
    """("live" | "edited" | "rejected", detail): is the policy snippet on disk what Apache loads?

    The live-copy module's (``snippet``: the policy file, the copy Apache
    loads, the record of a rejected edit) own status line.
    """
    def maybe(path: str) -> Optional[bytes]:
        try:
            return _read_small(path)
        except OSError:
            return None
    line = contract.status_line(snippet, maybe(snippet), maybe(paths.live_path()),
                                maybe(os.path.join(store.root, "rejected.json")))
    return snippet_status_of(line)


def _lock_shared(store: Store, wait: float) -> Tuple[Optional[int], str]:
    """A shared flock on the tool's lock file (only while reading); (fd, "") or (None, who holds it)."""
    try:
        fd = os.open(store.lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, ""  # no run ever took it: nothing to wait for
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd, ""
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "holder unknown"
                os.close(fd)
                return None, _printable(holder)
        time.sleep(0.05)


def _printable(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)[:200]


def read_state(state_dir: str, vhost_file: str, snippet: str, applied: bool,
               wait: float = LOCK_WAIT, seen: Optional[monitor_fast.Consulted] = None) -> Dict[str, object]:
    """Journal, opt-out, snippet status and the saved block, read under a shared lock.

    seen records the state dir and each file in it that is read (or found absent), before it is read.
    """
    store = Store(state_dir)
    if seen is not None:
        seen.add(monitor_fast.DIR, state_dir)
        seen.add(monitor_fast.FILE, store.lock_path)
    try:
        st = os.stat(state_dir)
    except FileNotFoundError:
        return {}  # never used on this host: nothing recorded
    except OSError as exc:
        return {"state_problem": f"{state_dir}: {exc.strerror}", "journal": "unknown"}
    if not stat.S_ISDIR(st.st_mode):
        return {"state_problem": f"{state_dir} is not a directory", "journal": "unknown"}
    if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022):
        # Anyone who can write there could plant a journal or an opt-out: read nothing from it.
        return {"state_untrusted": f"owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"}
    try:
        fd, busy = _lock_shared(store, wait)
    except PermissionError as exc:
        return {"state_problem": f"{store.lock_path}: {exc.strerror}", "journal": "unknown"}
    if busy:
        return {"busy": busy}
    if seen is not None:
        for p in (store.journal_path, optout.path(state_dir), os.path.join(store.root, "rejected.json"),
                  store._block_file(vhost_file) if vhost_file else ""):
            seen.add(monitor_fast.FILE, p)
    try:
        journal, jdetail = journal_state(store)
        out: Dict[str, object] = {"journal": journal, "journal_detail": jdetail, "optout": optout_state(state_dir)}
        if applied:
            out["snippet"], out["snippet_detail"] = snippet_state(store, snippet)
        try:
            out["applied_before"] = bool(vhost_file) and store.load_block(vhost_file) is not None
        except (OSError, ValueError):
            out["applied_before"] = False
        return out
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def gather(vhost: Optional[str], snippet: str, state_dir: str, seen: Optional[monitor_fast.Consulted] = None
           ) -> Tuple[Observations, Optional[policy.Assessment]]:
    """Every observation but the live one; the CN vhost's assessment (for ``--live``) when one was found.

    seen, when given, records every file consulted (`monitor_fast.Consulted`): the verdict's cache key.
    """
    fields, dump, a = located(vhost, snippet, seen)
    if a is not None and dump is not None and a.state != "unrecognised":
        fields.update(configuration(a, snippet, dump, state_dir))
    fields["state_dir"] = state_dir
    fields["as_root"] = os.geteuid() == 0
    fields.update(read_state(state_dir, str(fields.get("vhost_file", "")), snippet,
                             applied=fields.get("vhost_state") == "applied", seen=seen))
    return Observations(**fields), a  # type: ignore[arg-type]


def save_verdict(seen: monitor_fast.Consulted, vhost: Optional[str], verdict: Verdict) -> bool:
    """Cache a verdict for `monitor_fast` when it is deterministic: no UNKNOWN finding (busy, unreadable: transient)."""
    if verdict.state == UNKNOWN or any(f.state == UNKNOWN for f in verdict.findings):
        return False
    try:
        as_json = json.dumps(verdict.to_json(), indent=2, sort_keys=False) + "\n"  # as `cli.Output.document`
        return monitor_fast.save(seen, paths.state_dir(), vhost, verdict.state, format_nagios(verdict),
                                 format_checkmk(verdict), as_json)
    except Exception:  # the cache only saves time: it never changes what the monitoring gets
        return False
