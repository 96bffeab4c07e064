"""Real faults during apply: SIGKILL at every step, a full state filesystem, a read-only vhost.

Nothing is simulated in-process: the crash is the package SIGKILLing itself
at a named step (``DATAONE_CN_SSLVERIFY_FAILPOINT=kill:STEP``, the process
really dies with -9 and the next run finds what it left); the full disk is a
64 KiB tmpfs mounted on the state dir and filled to an exact number of free
pages; the read-only vhost is ``chattr +i`` on the file and, separately, a
read-only bind mount of ``sites-available``.  Every test checks the outcome
against the real server (curl) and the bytes on disk.
"""

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from harness import ApacheInstance
from transaction_support import (
    assert_applied_behaviour, assert_nothing_left_changed, assert_original_behaviour, backup_files,
    expected_applied, generations, journal_path, temp_leftovers, tool,
)

pytestmark = pytest.mark.integration

# ------------------------------------------------------------------ 7. SIGKILL at each step

#: Every failpoint the transaction has, in the order it reaches them.
KILL_STEPS = ["lock", "recover", "configtest-before", "plan", "backup", "journal", "write", "configtest",
              "reload", "probe", "commit"]
#: The journal is on disk when the kill comes (written by the "journal" step, removed at commit).
JOURNALED = {"write", "configtest", "reload", "probe", "commit"}
#: The vhost already holds the new bytes when the kill comes.
FILE_WRITTEN = {"configtest", "reload", "probe", "commit"}
#: Apache already serves the change when the kill comes.
SERVER_RELOADED = {"probe", "commit"}


@pytest.mark.parametrize("then", ["status", "apply"])
@pytest.mark.parametrize("step", KILL_STEPS)
def test_sigkill_at_each_step_is_recovered_by_the_next_run(apache: ApacheInstance, step: str, then: str) -> None:
    original = apache.vhost_bytes()
    applied = expected_applied(apache, original)
    gens = generations(apache)

    killed = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": "kill:" + step})
    assert killed.code == -9, "the failpoint did not kill the process\n%s" % killed
    # What the crash left: never a torn file, only the old or the new bytes.
    assert apache.vhost_bytes() == (applied if step in FILE_WRITTEN else original)
    assert journal_path(apache).exists() == (step in JOURNALED)
    assert temp_leftovers(apache) == []
    assert generations(apache) == gens + (1 if step in SERVER_RELOADED else 0)
    if step in SERVER_RELOADED:
        assert_applied_behaviour(apache)  # the crash really happened with the change live

    nxt = tool(apache, then)
    assert nxt.code == 0, nxt
    said_recover = [ln for ln in nxt.stderr.splitlines() if ln.startswith("recover:")]
    if step in JOURNALED:
        assert len(said_recover) == 1 and "interrupted apply (pid" in said_recover[0], nxt
    else:
        assert said_recover == [], "nothing to recover, yet:\n%s" % nxt
    assert not journal_path(apache).exists(), nxt
    assert temp_leftovers(apache) == []

    if then == "status":
        # Recovery puts the pre-change bytes back (the commit point is the journal's removal,
        # and the "commit" failpoint fires before it) and reloads a server that had the change.
        assert apache.vhost_bytes() == original, nxt
        (vh,) = nxt.doc["vhosts"]
        assert vh["state"] == "original:webkit-only", nxt
        assert nxt.doc["apache"] == dict(nxt.doc["apache"], running=True, config_ok=True), nxt
        assert_original_behaviour(apache)
    else:
        assert nxt.doc["result"] == "changed", nxt
        assert ("recover" in nxt.step_names()) == (step in JOURNALED), nxt
        assert apache.vhost_bytes() == applied
        assert_applied_behaviour(apache)


# ------------------------------------------------------------------ 8. full state filesystem


@pytest.fixture
def tiny_state_fs(apache: ApacheInstance) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted on the instance's state dir (unmounted at teardown).

    Real means: a filesystem that really runs out of space (ENOSPC from the
    kernel).  tmpfs accounts whole pages, so `fill` can leave an exact number.
    """
    d = apache.state_dir
    d.mkdir(mode=0o700)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(d)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if p.returncode != 0:
        pytest.fail("cannot mount a tmpfs on the state dir (needs root with CAP_SYS_ADMIN): %s"
                    % p.stdout.decode(errors="replace"), pytrace=False)
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=False)


def _page(path: Path) -> int:
    return os.statvfs(str(path)).f_frsize


def _pages(n: int, page: int) -> int:
    return -(-n // page)


def fill(path: Path, leave_pages: int) -> None:
    """Fill the filesystem at path so that exactly leave_pages pages stay free."""
    st = os.statvfs(str(path))
    assert st.f_bavail >= leave_pages
    with open(str(path / "zz-filler"), "wb") as f:
        f.write(b"\0" * ((st.f_bavail - leave_pages) * st.f_frsize))
    assert os.statvfs(str(path)).f_bavail == leave_pages


#: What fits, in pages: the lock line (1), the backup (size of the vhost), its metadata (1),
#: the saved block (1), the journal (1); then the journal's update after the write needs 1 more.
#: case -> (pages to leave as a function of the backup's pages, expected result, words in the message)
DISK_CASES = {
    "nothing-free": (lambda b: 0, "failed", "cannot use the state dir"),
    "no-room-for-backup": (lambda b: 1, "failed", "could not write the backup"),
    "no-room-for-backup-metadata": (lambda b: 1 + b, "failed", "could not write the backup"),
    "no-room-for-saved-block": (lambda b: 1 + b + 1, "failed", "could not write the backup"),
    "no-room-for-journal": (lambda b: 1 + b + 2, "failed", "could not write the journal"),
    "no-room-for-journal-update": (lambda b: 1 + b + 3, "rolled-back", "could not update the journal"),
}


@pytest.mark.parametrize("case", sorted(DISK_CASES))
def test_full_state_filesystem_changes_nothing(apache: ApacheInstance, tiny_state_fs: Path, case: str) -> None:
    leave, result, words = DISK_CASES[case]
    original = apache.vhost_bytes()
    fill(tiny_state_fs, leave(_pages(len(original), _page(tiny_state_fs))))
    gens = generations(apache)

    r = tool(apache, "apply")
    assert r.doc["result"] == result, r
    assert words in r.doc["message"] and "No space left on device" in r.doc["message"], r
    assert generations(apache) == gens, "nothing may be reloaded"
    assert_nothing_left_changed(apache, original, r, code=1)
    # No half-written files in the state dir: temp files removed, no backup without its metadata.
    leftovers = [n for n in os.listdir(str(tiny_state_fs / "backups")) if n.endswith(".tmp") or n.startswith(".")] \
        if (tiny_state_fs / "backups").is_dir() else []
    assert leftovers == [] and not [n for n in os.listdir(str(tiny_state_fs)) if n.endswith(".tmp")], leftovers
    data = [b for b in backup_files(apache) if not b.endswith(".json")]
    assert all(b + ".json" in backup_files(apache) for b in data), "backup without metadata: %s" % backup_files(apache)

    # Once there is room again, the same command works.
    os.unlink(str(tiny_state_fs / "zz-filler"))
    ok = tool(apache, "apply")
    assert ok.code == 0 and ok.doc["result"] == "changed", ok
    assert_applied_behaviour(apache)


# ------------------------------------------------------------------ 9. read-only vhost


def test_immutable_vhost_file_is_not_changed(apache: ApacheInstance) -> None:
    """``chattr +i`` on the vhost (root cannot replace it either): the write fails, exit 1."""
    original = apache.vhost_bytes()
    subprocess.run(["chattr", "+i", str(apache.vhost_path)], check=True)
    try:
        r = tool(apache, "apply")
    finally:
        subprocess.run(["chattr", "-i", str(apache.vhost_path)], check=True)
    assert r.doc["result"] == "rolled-back", r
    assert [s["name"] for s in r.steps if not s["ok"]] == ["write"], r
    assert "Operation not permitted" in r.doc["message"], r
    assert "reload" not in r.step_names(), r
    assert_nothing_left_changed(apache, original, r, code=1)


def test_read_only_sites_available_is_not_changed(apache: ApacheInstance) -> None:
    """A read-only bind mount of sites-available (EROFS even for root): exit 1, nothing changed."""
    original = apache.vhost_bytes()
    d = str(apache.vhost_path.parent)
    subprocess.run(["mount", "--bind", d, d], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", d], check=True)
        r = tool(apache, "apply")
    finally:
        subprocess.run(["umount", d], check=True)
    assert r.doc["result"] == "rolled-back", r
    assert [s["name"] for s in r.steps if not s["ok"]] == ["write"], r
    assert "Read-only file system" in r.doc["message"], r
    assert_nothing_left_changed(apache, original, r, code=1)
