"""`monitor`'s verdict cache (`monitor_fast`) against a real Apache: used on a hit, every change seen at once.

A hit is told from a miss without any hook in the package: the command runs
under ``python3 -v`` (it names every module imported, on every Python from
3.6) and a hit never imports ``argparse`` (nor ``re``, ``json``, the
package's ``cli``), which the full path always does.
Each change is made by real means (the tool's apply and revert, the
original vhost copied back, a broken conf file, a corrupt journal, an edit
of the policy file, a held flock) and the very next run must report it.
Waiting `monitor_fast.RACY` seconds after a change is what lets the next
run save its verdict (the racy rule); nothing here asserts a duration.
"""

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Set

import pytest

from dataone_cn_sslverify import monitor_fast
from harness import ApacheInstance
from transaction_support import MAIN, tool, tool_env

pytestmark = pytest.mark.integration

PYTHON = sys.executable


def _imports(stderr: bytes) -> Set[str]:
    """The modules ``python3 -v`` says it imported."""
    return {ln.split("'")[1] for ln in stderr.decode("utf-8", "replace").splitlines()
            if ln.startswith("import '") and ln.count("'") >= 2}


#: What the fast path needs besides its own modules: nothing, or subprocess where there is no posix_spawn (< 3.8).
_BASELINE = "pass" if hasattr(os, "posix_spawn") else "import subprocess"
#: What the full path imports and the fast path does not, less what the baseline imports anyway
#: (on 3.6 the site module imports ``re``, and subprocess imports it too).
FULL_PATH_ONLY = {"argparse", "re", "json", "typing", "subprocess", "dataone_cn_sslverify.cli",
                  "dataone_cn_sslverify.monitor_observe"} - _imports(
    subprocess.run([PYTHON, "-v", "-c", _BASELINE], stderr=subprocess.PIPE, check=True).stderr)


class Ran(NamedTuple):
    code: int
    stdout: str
    imported: Set[str]

    @property
    def hit(self) -> bool:
        return not (self.imported & FULL_PATH_ONLY)


def monitor(inst: ApacheInstance, *args: str, head: Optional[List[str]] = None,
            path_prefix: Optional[Path] = None) -> Ran:
    """``monitor`` (prepended unless in args) as the plugins run it (``python3 -m``, or head), under ``-v``."""
    argv = (head or [PYTHON, "-v", "-m", "dataone_cn_sslverify"]) + (
        list(args) if "monitor" in args else ["monitor"] + list(args))
    p = subprocess.run(argv, env=tool_env(inst, path_prefix=path_prefix), cwd=str(MAIN), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    imported = _imports(p.stderr)
    assert "os" in imported, "python3 -v named no import: the hit/miss evidence is missing"
    return Ran(p.returncode, p.stdout.decode("utf-8"), imported)


FULL = [PYTHON, "-v", "-c", "import sys\nfrom dataone_cn_sslverify import cli\nsys.exit(cli.main(sys.argv[1:]))"]


def full(inst: ApacheInstance, *args: str) -> Ran:
    """The full path, never the cache (it saves the verdict when it may)."""
    return monitor(inst, *args, head=FULL)


def cache_path(inst: ApacheInstance) -> Path:
    return inst.state_dir / monitor_fast.NAME


def written(inst: ApacheInstance) -> tuple:
    """What a write of the cache changes (a read moves only the atime)."""
    st = os.lstat(str(cache_path(inst)))
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def settle() -> None:
    """Let the last change age past the racy window, so that the next full run may save its verdict."""
    time.sleep(monitor_fast.RACY + 0.3)


def primed(inst: ApacheInstance) -> Ran:
    """Settle, let the full path save the verdict, and show that the next run is a hit with the same answer."""
    settle()
    f = full(inst)
    assert not f.hit and cache_path(inst).exists(), f
    h = monitor(inst)
    assert h.hit and (h.code, h.stdout) == (f.code, f.stdout), (f, h)
    return h


def applied(inst: ApacheInstance) -> None:
    r = tool(inst, "apply")
    assert r.code == 0, r


def test_a_hit_prints_exactly_what_the_full_path_prints_and_writes_nothing(apache: ApacheInstance,
                                                                           tmp_path: Path) -> None:
    applied(apache)
    primed(apache)
    st = os.lstat(str(cache_path(apache)))
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_uid == os.geteuid()
    lines = (["monitor"], ["monitor", "--format", "checkmk"], ["--json", "monitor"],
             ["monitor", "--format=checkmk", "--json", "-v"])
    want = {}
    for args in lines:
        f = full(apache, *args)
        assert not f.hit
        want[tuple(args)] = (f.code, f.stdout)
    st = written(apache)
    for args in lines:
        h = monitor(apache, *args)
        assert h.hit, (args, sorted(h.imported & FULL_PATH_ONLY))
        assert (h.code, h.stdout) == want[tuple(args)], args
    assert want[("monitor",)][1].startswith("OK - policy live as") and want[("monitor",)][0] == 0
    assert written(apache) == st, "a hit wrote its cache"
    # The installed launcher (python3 -IS, the modules in a private dir): the same, on a hit and on a miss.
    launcher = tmp_path / "dataone-cn-sslverify"
    launcher.write_text((MAIN / "sbin" / "dataone-cn-sslverify").read_text().replace(
        '"/usr/share/dataone-cn-sslverify"', repr(str(MAIN))))
    launcher.chmod(0o755)
    installed = ["/usr/bin/python3", "-ISv", str(launcher)]
    # Warm-up: -I ignores PYTHONDONTWRITEBYTECODE, so in a fresh clone this may be the first run that writes
    # byte-code, creating dataone_cn_sslverify/__pycache__ and so changing the package directory the key
    # records (an installed package ships its byte-code). Then let that age past the racy window.
    monitor(apache, "monitor", head=installed)
    settle()
    first = monitor(apache, "monitor", head=installed)  # a miss when the cache is another Python's (3.6 run)
    h = monitor(apache, "monitor", head=installed)
    assert h.hit and (h.code, h.stdout) == (first.code, first.stdout) == want[("monitor",)]
    m = monitor(apache, "monitor", "--live", "--cache", "86400",
                head=installed)
    assert not m.hit and m.code == 0 and "live" in m.stdout, m


def test_every_change_is_seen_at_once(apache: ApacheInstance) -> None:
    applied(apache)
    primed(apache)

    broken = apache.enable_conf("zz-broken", "# someone else's file\nThisIsNotADirective on\n")
    r = monitor(apache)
    assert r.code == 2 and "broken by %s:2" % (apache.confdir / "conf-enabled" / "zz-broken.conf") in r.stdout, r
    assert not r.hit
    broken.write_text("# someone else's file, fixed\n")
    primed(apache)

    apache.write_vhost(apache.rendered_vhost())  # dataone-cn-os-core's postinst: its template over the vhost
    r = monitor(apache)
    assert r.code == 1 and r.stdout.startswith("WARNING - drift:") and not r.hit, r
    r = monitor(apache, "--format", "checkmk")
    assert r.stdout.startswith("1 dataone-cn-sslverify ") and not r.hit, r
    applied(apache)
    primed(apache)

    journal = apache.state_dir / "journal.json"
    fd = os.open(str(journal), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"{ truncated")
    os.close(fd)
    r = monitor(apache)
    assert r.code == 2 and "journal is unreadable" in r.stdout and not r.hit, r
    journal.unlink()
    primed(apache)

    r = tool(apache, "revert")
    assert r.code == 0, r
    r = monitor(apache)
    assert r.code == 0 and "disabled by the administrator" in r.stdout and not r.hit, r
    assert primed(apache).stdout == r.stdout
    applied(apache)
    assert "policy live as" in monitor(apache).stdout

    primed(apache)
    policy = apache.policy_path.read_bytes()
    apache.policy_path.write_bytes(policy + b"# the operator's note\n")
    r = monitor(apache)
    assert r.code == 1 and "edited, not live yet" in r.stdout and not r.hit, r


def test_a_same_size_edit_with_the_old_mtime_is_seen(apache: ApacheInstance) -> None:
    """What stat cannot hide: a rewrite of the same size with its mtime put back still moves the ctime."""
    applied(apache)
    primed(apache)
    p = apache.policy_path
    st = os.stat(str(p))
    data = p.read_bytes()
    i = data.index(b"# ") + 2  # a letter of a comment
    p.write_bytes(data[:i] + (b"X" if data[i:i + 1] != b"X" else b"Y") + data[i + 1:])
    os.utime(str(p), ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(str(p)).st_size == st.st_size and os.stat(str(p)).st_mtime_ns == st.st_mtime_ns
    assert p.read_bytes() != data
    r = monitor(apache)
    assert r.code == 1 and "edited, not live yet" in r.stdout and not r.hit, r


def test_a_change_just_before_a_run_is_not_cached(apache: ApacheInstance) -> None:
    """The racy rule: apply has just written the vhost, so neither cache is saved until it has aged."""
    applied(apache)
    r = full(apache)
    assert r.code == 0
    assert not cache_path(apache).exists() and not (apache.state_dir / "monitor-config.json").exists()
    settle()
    assert full(apache).code == 0
    assert cache_path(apache).exists() and (apache.state_dir / "monitor-config.json").exists()


def _forged(real: bytes, state: int = 2, text: str = "CRITICAL - planted", break_key: bool = False) -> bytes:
    doc = monitor_fast.parse(real)
    assert doc is not None
    paths = doc.paths
    if break_key:
        paths = [(k, p, t + " 1") if i == 0 else (k, p, t) for i, (k, p, t) in enumerate(paths)]
    section = b"".join(monitor_fast.netstring(x.encode("utf-8", "surrogateescape")) for e in paths for x in e)
    return monitor_fast.serialise(doc.context, doc.ctl, doc.dump, section, state, text + "\n",
                                  "%d dataone-cn-sslverify - %s\n" % (state, text), "{}\n")


def _plant(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name("planted.tmp")
    tmp.write_bytes(data)
    os.chmod(str(tmp), mode)
    os.rename(str(tmp), str(path))


def test_a_planted_cache_is_ignored(apache: ApacheInstance) -> None:
    applied(apache)
    real_run = primed(apache)
    cache = cache_path(apache)
    real = cache.read_bytes()

    # The control: a cache that is ours, private and carries the right key is served (only root could write it).
    _plant(cache, _forged(real))
    r = monitor(apache)
    assert r.hit and r.code == 2 and r.stdout == "CRITICAL - planted\n", "the forgery below would be served"

    def ignored(why: str) -> None:
        r = monitor(apache)
        assert not r.hit and (r.code, r.stdout) == (real_run.code, real_run.stdout), (why, r)

    _plant(cache, b"garbage\x00\xff" * 100)
    ignored("garbage")
    _plant(cache, _forged(real, break_key=True))
    ignored("a valid cache with another key")
    _plant(cache, _forged(real), mode=0o620)
    ignored("group-writable")
    _plant(cache, _forged(real))
    os.chown(str(cache), 65534, 65534)
    ignored("owned by another user")
    target = apache.state_dir / "elsewhere"
    _plant(target, _forged(real))
    cache.unlink()
    cache.symlink_to(target)
    ignored("a symlink")
    _plant(cache, _forged(real))
    os.link(str(cache), str(apache.state_dir / "second-name"))
    ignored("two links")


def _wait_until_held(lock: Path) -> None:
    """Until flock(1) holds the lock exclusively (a shared lock is refused), at most 10 s."""
    for _ in range(200):
        try:
            fd = os.open(str(lock), os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return
            finally:
                os.close(fd)
        time.sleep(0.05)
    pytest.fail("flock(1) never took %s" % lock)


def test_a_run_holding_the_lock_is_reported_busy_and_not_cached(apache: ApacheInstance) -> None:
    applied(apache)
    primed(apache)
    st = written(apache)
    holder = subprocess.Popen(["flock", "--no-fork", "-x", str(apache.state_dir / "lock"), "sleep", "30"])
    try:
        _wait_until_held(apache.state_dir / "lock")
        r = monitor(apache)
        assert r.code == 3 and "in progress" in r.stdout and not r.hit, r
    finally:
        holder.kill()
        holder.wait()
    assert written(apache) == st, "a busy verdict was saved"
    r = monitor(apache)
    assert r.code == 0 and r.hit, r


def test_a_warning_with_a_pid_in_every_dump_still_hits(apache: ApacheInstance) -> None:
    """A module loaded twice: each dump warns with its own time and pid; the files listed are what counts."""
    apache.enable_conf("zz-dup", "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n")
    assert "AH01574" in apache.apache2ctl("-t", "-D", "DUMP_INCLUDES").output
    applied(apache)
    h = primed(apache)
    assert h.code == 0 and h.stdout.startswith("OK - "), h


def test_path_counts_through_the_apache2ctl_it_finds(apache: ApacheInstance, tmp_path: Path) -> None:
    """Another PATH finding the same apache2ctl shares the cache; a wrapper found first is another key."""
    applied(apache)
    want = primed(apache)
    empty = tmp_path / "empty"
    empty.mkdir()
    h = monitor(apache, path_prefix=empty)
    assert h.hit and (h.code, h.stdout) == (want.code, want.stdout), h
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    script = '#!/bin/sh\necho "(*) %s"\nexec /usr/sbin/apache2ctl "$@"\n' % apache.vhost_path
    (wrapper / "apache2ctl").write_text(script)
    (wrapper / "apache2ctl").chmod(0o755)
    m = monitor(apache, path_prefix=wrapper)
    assert not m.hit and (m.code, m.stdout) == (want.code, want.stdout), m
