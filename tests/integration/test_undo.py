"""The one undo path under real faults: racing edits, lying restarts, signal bursts, failpoint hygiene.

Each test drives the command as a real subprocess against a real Apache and
checks what a person would check afterwards: the bytes on disk (the
operator's edit still there), whether the live server answers and how
(curl), the exit code and the words of the message, and that no file outside
the tool's own was written.
"""

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from harness import ApacheInstance
from transaction_support import (
    Run, argv_of, assert_applied_behaviour, assert_original_behaviour, backup_files, expected_applied, generations,
    journal_path, spawn, temp_leftovers, tool,
)

pytestmark = pytest.mark.integration

EDIT = "# edited by an operator while the tool ran\n"


def _edit_env(inst: ApacheInstance, failpoint: str) -> Dict[str, str]:
    return {"DATAONE_CN_SSLVERIFY_FAILPOINT": failpoint, "DATAONE_CN_SSLVERIFY_TEST_EDIT_FILE": str(inst.vhost_path),
            "DATAONE_CN_SSLVERIFY_TEST_EDIT_TEXT": EDIT}


def _wrapper(root: Path, body: str) -> Path:
    """A directory with an ``apache2ctl`` that runs body (sh) first, then Debian's apache2ctl."""
    bindir = root / "wrapper-bin"
    bindir.mkdir(exist_ok=True)
    w = bindir / "apache2ctl"
    w.write_text("#!/bin/sh\n" + body + 'exec /usr/sbin/apache2ctl "$@"\n')
    w.chmod(0o755)
    return bindir


#: Fails every graceful reload (the server keeps what it had).
GRACEFUL_FAILS = 'if [ "$1" = graceful ] || [ "$1 $2" = "-k graceful" ]; then echo "wrapper: graceful fails on purpose" >&2; exit 1; fi\n'


def _files_outside(inst: ApacheInstance, since: float) -> List[str]:
    """Files under the instance root, outside the state dir and the logs, modified after since (besides the vhost)."""
    out = []
    skip = {str(inst.state_dir), str(inst.root / "wrapper-bin")}
    for d, dirs, files in os.walk(str(inst.root)):
        dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip and x not in ("log", "logs", "run")]
        for f in files:
            p = os.path.join(d, f)
            if p != str(inst.vhost_path) and not p.endswith((".log", ".pid")) and os.lstat(p).st_mtime > since:
                out.append(p)
    return out


def _manual_argvs(message: str) -> List[List[str]]:
    """The commands after "Run by hand: ", split as a shell splits them (labels such as "compare:" dropped)."""
    lex = shlex.shlex(message.split("Run by hand: ", 1)[1], posix=True, punctuation_chars=";&")
    lex.whitespace_split = True
    cmds: List[List[str]] = [[]]
    for tok in lex:
        if tok in (";", "&&"):
            cmds.append([])
        elif tok.endswith(":") and not tok.startswith("/"):
            cmds[-1] = []  # a label before the command ("compare:", "to keep the current file:")
        else:
            cmds[-1].append(tok.rstrip(".") if tok.endswith(".") and tok.count(".") == 1 else tok)
    return [c for c in cmds if c]


# ------------------------------------------------------------------ compare-and-swap before the write


def test_edit_between_plan_and_write_is_kept_and_nothing_is_written(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    gens, t0 = generations(apache), time.time()

    r = tool(apache, "apply", extra_env=_edit_env(apache, "edit:backup"))

    assert r.code == 2 and r.doc["result"] == "refused", r
    assert "changed by someone else while apply ran; nothing written" in r.doc["message"], r
    assert apache.vhost_bytes() == original + EDIT.encode(), "the operator's edit must be on disk, untouched"
    assert not journal_path(apache).exists() and temp_leftovers(apache) == [], r
    assert generations(apache) == gens, "nothing may be reloaded"
    assert_original_behaviour(apache)
    assert _files_outside(apache, t0) == []
    # The next run plans from the edited bytes and keeps the edit.
    again = tool(apache, "apply")
    assert again.code == 0, again
    assert apache.vhost_bytes() == expected_applied(apache, original) + EDIT.encode()
    assert_applied_behaviour(apache)


# ------------------------------------------------------------------ the rollback follows the same rule


def test_edit_after_the_write_is_never_rolled_over(apache: ApacheInstance) -> None:
    """An operator edits the vhost after our write; then the reload fails: both versions kept, exit 3."""
    original = apache.vhost_bytes()
    applied = expected_applied(apache, original)
    bindir = _wrapper(apache.root, GRACEFUL_FAILS)
    t0 = time.time()

    r = tool(apache, "apply", extra_env=_edit_env(apache, "edit:reload"), path_prefix=bindir)

    assert r.code == 3 and r.doc["result"] == "unrestored", r
    msg = r.doc["message"]
    assert "changed by someone else since this tool wrote it; not touching it" in msg, r
    assert "both versions kept" in msg and r.doc["backup"] in msg, r
    assert apache.vhost_bytes() == applied + EDIT.encode(), "the operator's edit was overwritten"
    assert Path(r.doc["backup"]).read_bytes() == original
    assert_original_behaviour(apache)  # every reload failed: the server still runs the old configuration
    # The commands are exact: diff, keep (discard the journal), or put ours back.
    cmds = _manual_argvs(msg)
    assert ["diff", "-u", r.doc["backup"], str(apache.vhost_path)] in cmds, cmds
    assert ["cp", "-p", r.doc["backup"], str(apache.vhost_path)] in cmds, cmds
    assert ["dataone-cn-sslverify", "discard-journal"] in cmds, cmds
    assert journal_path(apache).exists(), "a person must look: the journal stays"
    assert _files_outside(apache, t0) == []

    # The next command does not overwrite it either, and says why.
    st = tool(apache, "status")
    assert st.code == 3 and "not touching it" in st.stderr, st
    assert apache.vhost_bytes() == applied + EDIT.encode()

    # The operator keeps their version: discard-journal sets the journal aside (a copy kept).
    before = journal_path(apache).read_bytes()
    d = tool(apache, "discard-journal")
    assert d.code == 0 and d.doc["kept"] and Path(d.doc["kept"]).read_bytes() == before, d
    assert not journal_path(apache).exists()
    assert apache.vhost_bytes() == applied + EDIT.encode()
    assert tool(apache, "status").code == 0


# ------------------------------------------------------------------ verified restarts


def _kill_apache_sh(inst: ApacheInstance) -> str:
    """sh that SIGKILLs this instance's master and its children (a crash of Apache)."""
    return ('. "$APACHE_ENVVARS"; m=$(cat "$APACHE_PID_FILE" 2>/dev/null); '
            'if [ -n "$m" ]; then kill -9 $(ps -o pid= --ppid "$m") "$m" 2>/dev/null; fi; sleep 0.5\n')


@pytest.mark.parametrize("how", ["stopped", "crashed"])
def test_apache_dying_during_the_change_is_started_and_verified(apache: ApacheInstance, how: str) -> None:
    """graceful fails and Apache is gone: the rollback starts it and checks it serves before saying so.

    ``stopped``: someone runs ``apache2ctl stop`` while the change is under way; the rollback's
    start works and is verified. ``crashed``: the master is SIGKILLed; its pid file stays and
    ``apache2ctl start`` answers "already running" (a zombie, or a pid reused) without starting
    anything: the tool must not believe it.
    """
    original = apache.vhost_bytes()
    kill = "/usr/sbin/apache2ctl stop; " if how == "stopped" else _kill_apache_sh(apache)
    body = 'if [ "$1" = graceful ] || [ "$1 $2" = "-k graceful" ]; then %s echo "wrapper: Apache went away" >&2; exit 1; fi\n' % kill
    if how == "crashed":
        body += 'if [ "$1" = start ]; then echo "httpd (pid 4242) already running"; exit 0; fi\n'
    bindir = _wrapper(apache.root, body)
    try:
        r = tool(apache, "apply", path_prefix=bindir)
        assert apache.vhost_bytes() == original, "the file must be restored either way"
        if how == "stopped":
            assert r.code == 1 and r.doc["result"] == "rolled-back", str(r)
            assert "started again, verified" in r.doc["message"] and "answers TLS" in r.doc["message"], str(r)
            assert not journal_path(apache).exists()
            assert_original_behaviour(apache)
        else:
            assert r.code == 3 and r.doc["result"] == "unrestored", str(r)
            assert "Apache is not running" in r.doc["message"] and "already running" in r.doc["message"], str(r)
            assert "started again" not in r.doc["message"] and "active again" not in r.doc["message"], str(r)
            assert not apache.is_running()
            cmds = _manual_argvs(r.doc["message"])
            assert cmds and cmds[-1][-2:] == ["apache2ctl", "start"], cmds
            assert journal_path(apache).exists()
    finally:
        if not apache.is_running():
            apache.start()


def test_recovery_starts_an_apache_that_died_with_the_change_and_verifies_it(apache: ApacheInstance) -> None:
    """Killed after the reload (the change live), then Apache stops too: the next command's recovery
    puts the bytes back, starts Apache, and says so only once it answers TLS."""
    original = apache.vhost_bytes()
    killed = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": "kill:probe"})
    assert killed.code == -9, str(killed)
    assert_applied_behaviour(apache)
    apache.stop()

    st = tool(apache, "status", as_json=False)

    assert st.code == 0, str(st)
    rec = [ln for ln in st.stderr.splitlines() if ln.startswith("recover:")]
    assert len(rec) == 1 and "started again, verified" in rec[0] and "answers TLS" in rec[0], st.stderr
    assert apache.vhost_bytes() == original and not journal_path(apache).exists()
    assert_original_behaviour(apache)


# ------------------------------------------------------------------ signals


def _bombard(p: "subprocess.Popen[bytes]", start: str, period: float = 0.01) -> List[str]:
    """Wait for the line start on the child's stderr, then send SIGTERM/SIGHUP/SIGINT every period until it exits."""
    lines: List[str] = []
    assert p.stderr is not None
    for raw in p.stderr:
        line = raw.decode("utf-8", "replace")
        lines.append(line)
        if line.startswith(start):
            break
    sigs = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    i = 0
    while p.poll() is None:
        try:
            os.kill(p.pid, sigs[i % 3])
        except ProcessLookupError:
            break
        i += 1
        time.sleep(period)
    lines.extend(x.decode("utf-8", "replace") for x in p.stderr.readlines())
    return lines


@pytest.mark.parametrize("start,runs", [("write:", 20), ("reload:", 5)])
def test_signal_bursts_from_the_write_on_never_skip_the_rollback(apache: ApacheInstance, start: str, runs: int) -> None:
    """SIGTERM, SIGHUP, SIGINT every 10 ms from the write (or from the reload, so the rollback must reload) on."""
    original = apache.vhost_bytes()
    applied = expected_applied(apache, original)
    outcomes: Dict[int, int] = {}
    for n in range(runs):
        p = spawn(apache, "apply")
        lines = _bombard(p, start)
        out = p.stdout.read().decode() if p.stdout else ""
        code = p.wait(timeout=120)
        run = Run(argv_of("apply"), code, out, "".join(lines), 0.0)
        outcomes[code] = outcomes.get(code, 0) + 1
        # No further command: disk and live configuration agree, and nothing is left to recover.
        assert not journal_path(apache).exists(), "run %d left a journal\n%s" % (n, run)
        assert temp_leftovers(apache) == [], run
        assert code in (0, 1), "run %d: exit %d\n%s" % (n, code, run)
        assert "internal error" not in run.stderr, run
        if code == 1:
            assert run.doc["result"] == "rolled-back" and "interrupted by SIG" in run.doc["message"], run
            assert apache.vhost_bytes() == original, run
            assert_original_behaviour(apache)
        else:
            assert apache.vhost_bytes() == applied, run
            assert_applied_behaviour(apache)
            assert tool(apache, "revert").code == 0
    assert outcomes.get(1, 0) >= runs * 3 // 4, "the signals should interrupt almost every run: %s" % outcomes


# ------------------------------------------------------------------ failpoints are a test-only hook


def test_failpoint_variable_left_on_a_production_host_does_nothing(apache: ApacheInstance) -> None:
    """``python3 -m dataone_cn_sslverify`` (as installed) ignores DATAONE_CN_SSLVERIFY_FAILPOINT."""
    original = apache.vhost_bytes()
    r = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": "kill:write"}, module=True)
    assert r.code == 0 and r.doc["result"] == "changed", r
    assert apache.vhost_bytes() == expected_applied(apache, original)
    assert not journal_path(apache).exists()
    assert_applied_behaviour(apache)
    pkg = Path(__file__).resolve().parents[2] / "dataone_cn_sslverify"
    readers = [f.name for f in pkg.glob("*.py") if "FAILPOINT\"" in f.read_text() or "_FAILPOINT" in f.read_text()]
    assert readers == [], "the package must not read a failpoint variable: %s" % readers
    assert backup_files(apache)


def test_commands_for_a_vhost_named_with_shell_metacharacters_run_nothing_else(apache: ApacheInstance) -> None:
    """A vhost file ``cn ssl;touch X.conf``: the printed commands, pasted into a shell, only do what they say."""
    hostile = apache.vhost_path.parent / "cn ssl;touch X.conf"
    os.rename(str(apache.vhost_path), str(hostile))
    apache.vhost_link.unlink()
    os.symlink("../sites-available/cn ssl;touch X.conf", str(apache.vhost_link))
    assert apache.graceful().ok
    original = hostile.read_bytes()
    env = _edit_env(apache, "edit:reload")
    env["DATAONE_CN_SSLVERIFY_TEST_EDIT_FILE"] = str(hostile)

    r = tool(apache, "apply", extra_env=env, path_prefix=_wrapper(apache.root, GRACEFUL_FAILS))

    assert r.code == 3 and "both versions kept" in r.doc["message"], str(r)
    assert hostile.read_bytes() == expected_applied(apache, original) + EDIT.encode()
    cmds = _manual_argvs(r.doc["message"])
    assert ["diff", "-u", r.doc["backup"], str(hostile)] in cmds, cmds
    # Run the comparison exactly as printed, in a scratch directory: it must not create X.conf.
    diff = r.doc["message"].split("compare: ", 1)[1].split("; to keep the current file: ", 1)[0]
    scratch = apache.root / "scratch"
    scratch.mkdir()
    p = subprocess.run(["bash", "-c", diff], cwd=str(scratch), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 1 and b"+" + EDIT.encode().strip() in p.stdout, p
    assert os.listdir(str(scratch)) == [] and not (apache.root / "X.conf").exists()
