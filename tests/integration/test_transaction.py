"""apply / revert / restore against a real Apache 2.4: the transaction and its one rollback path.

Each test gets its own running instance (tests/conftest.py ``apache``: the
webkit-only vhost of production before the change) and drives the package as
a real subprocess.  Faults are real: a snippet Apache rejects, a config broken
by another file, a wrapper ``apache2ctl`` that fails ``graceful``, a conf
snippet that makes the live check fail, a lock held by someone else.
Crashes, full disks and read-only files are in test_faults.py.

After every failure the tests check what docs/design.md promises, independently of
the package's own report: exit code, the vhost byte-identical, Apache still
running with the old behaviour (curl with an IE11 User-Agent over TLS 1.2 is
asked for a certificate), and no journal left behind.
"""

import fcntl
import hashlib
import os
import re
import shlex
import stat
import time
from pathlib import Path
from typing import Callable

import pytest

from harness import ApacheInstance
from transaction_support import (
    APPLY_STEPS, BEGIN, END, FIRST_APPLY_STEPS, IE11, SAFARI, WEBKIT_ONLY_BLOCK, assert_applied_behaviour, assert_asked,
    assert_nothing_left_changed, assert_original_behaviour, backup_files, expected_applied, finish, generations,
    journal_path, spawn, temp_leftovers, tool,
)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ 1. happy path


def test_apply_revert_roundtrip_and_idempotent_apply(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    assert_original_behaviour(apache)
    gens = generations(apache)

    r = tool(apache, "apply")
    assert r.code == 0, r
    doc = r.doc
    assert doc["result"] == "changed", r
    assert r.step_names() == FIRST_APPLY_STEPS, r
    assert all(s["ok"] for s in doc["steps"]), r
    # Each step also printed its one human line on stderr, in order.
    human = [ln.split(":", 1)[0] for ln in r.stderr.splitlines() if ln.split(":", 1)[0] in APPLY_STEPS]
    assert human == FIRST_APPLY_STEPS, r
    assert doc["file"] == str(apache.vhost_path), r  # the real path, not the sites-enabled link
    assert doc["backup"] and Path(doc["backup"]).read_bytes() == original, r
    assert apache.vhost_bytes() == expected_applied(apache, original), r
    assert generations(apache) == gens + 1, "apply must reload exactly once"
    assert not journal_path(apache).exists()
    # Live: browsers not asked, the API client asked (TLS 1.2 renegotiation and TLS 1.3 PHA).
    assert_applied_behaviour(apache)
    # The probe results the gate used are in the document.
    asked = {p["name"]: p["cert_requested"] for p in doc["probe"]}
    assert asked.get("browser-ie11-win7/1.2/nocert/reneg") is False and asked.get("api-curl/1.2/cert") is True, doc["probe"]
    assert asked.get("api-curl/1.3/cert") is True and asked.get("browser-chrome/1.3/nocert/pha") is False, doc["probe"]
    assert doc["gate"]["ok"] and doc["gate"]["mode"] == "policy", doc["gate"]

    # A second apply: nothing to do, no backup, no reload (same master, same children).
    backups = backup_files(apache)
    pids, master, gens = sorted(apache.processes()), apache.pid(), generations(apache)
    again = tool(apache, "apply")
    assert again.code == 0 and again.doc["result"] == "unchanged", again
    assert "reload" not in again.step_names() and "write" not in again.step_names(), again
    assert again.doc["backup"] is None, again
    assert backup_files(apache) == backups
    time.sleep(0.3)  # a graceful reload would have replaced the children by now
    assert apache.pid() == master and sorted(apache.processes()) == pids and generations(apache) == gens
    assert apache.vhost_bytes() == expected_applied(apache, original)

    # revert: byte-identical to the original, and the original behaviour is live again.
    rv = tool(apache, "revert")
    assert rv.code == 0 and rv.doc["result"] == "changed", rv
    assert rv.step_names() == APPLY_STEPS, rv
    assert apache.vhost_bytes() == original
    assert not journal_path(apache).exists()
    assert_original_behaviour(apache)

    # revert again: nothing to do.
    rv2 = tool(apache, "revert")
    assert rv2.code == 0 and rv2.doc["result"] == "unchanged", rv2
    assert apache.vhost_bytes() == original


# ------------------------------------------------------------------ 2. revert after hand edits


def test_revert_keeps_operator_edits_elsewhere_in_the_vhost(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    assert tool(apache, "apply").code == 0
    applied = apache.vhost_bytes()

    # An operator edits other lines: one before the block, one added right after our
    # end marker, one further down (a comment); then reloads by hand.
    def edit(data: bytes) -> bytes:
        data = data.replace(b"\tServerAdmin administrator@dataone.org\n", b"\tServerAdmin ops@dataone.org\n", 1)
        data = data.replace(b"\t#   Server Certificate:\n", b"\t#   Server Certificate (renewed 2024):\n", 1)
        return data

    marker_end = b"\t%s\n" % END
    edited = edit(applied).replace(marker_end, marker_end + b'\tHeader always set X-Operator "edited"\n', 1)
    assert edited != applied and edited.count(b"X-Operator") == 1
    apache.write_vhost(edited)
    assert apache.graceful().ok

    r = tool(apache, "revert")
    assert r.code == 0 and r.doc["result"] == "changed", r
    expected = edit(original).replace(WEBKIT_ONLY_BLOCK, WEBKIT_ONLY_BLOCK + b'\tHeader always set X-Operator "edited"\n', 1)
    assert apache.vhost_bytes() == expected
    assert_original_behaviour(apache)
    # The operator's live edit survived the revert's reload.
    assert apache.request("/cn/", user_agent=SAFARI).headers.get("x-operator") == "edited"


def _remove_managed_block(data: bytes) -> bytes:
    return re.sub(rb"\t# dataone-cn-sslverify: begin[^\n]*\n[^\n]*\n\t# dataone-cn-sslverify: end\n", b"", data)


HAND_EDITS = {
    # the Include line changed (another directive slipped in between our markers)
    "include-edited": lambda d: d.replace(b"\t%s\n" % END, b"\tSSLVerifyDepth 5\n\t%s\n" % END),
    # the Include line deleted, markers left
    "include-removed": lambda d: re.sub(rb"\tInclude [^\n]*cn-sslverify\.live\.conf\n", b"", d),
    # our three lines replaced by a hand-written plain block
    "block-replaced": lambda d: _remove_managed_block(d).replace(
        b"\t#\n \t\n", b"\t#\n\tSSLVerifyClient optional\n\tSSLVerifyDepth 10\n \t\n"),
    # our three lines deleted and nothing put back
    "block-removed": _remove_managed_block,
}


@pytest.mark.parametrize("how", sorted(HAND_EDITS))
def test_revert_refuses_when_the_managed_include_was_edited_or_removed(apache: ApacheInstance, how: str) -> None:
    assert tool(apache, "apply").code == 0
    edited = HAND_EDITS[how](apache.vhost_bytes())
    assert edited != apache.vhost_bytes()
    apache.write_vhost(edited)
    backups = backup_files(apache)

    r = tool(apache, "revert")
    assert r.code == 2 and r.doc["result"] == "refused", r
    msg = r.doc["message"]
    assert str(apache.vhost_path) in msg and "nothing changed" in msg, r
    assert re.search(r"by hand|removed", msg), "message does not say what happened: %s" % msg
    assert backup_files(apache) == backups
    # The server was not touched: it still serves the applied config it had.
    assert_nothing_left_changed(apache, edited, r, code=2, behaviour="applied")


# ------------------------------------------------------------------ 3. policy file refused or failing: test_policy_live.py


# ------------------------------------------------------------------ 4. config already broken


def test_config_already_broken_is_refused_and_nothing_changes(apache: ApacheInstance) -> None:
    broken = apache.enable_conf("local-broken", "# an operator's half-finished edit\nThisIsNotADirective on\n")
    assert not apache.configtest().ok
    original, gens = apache.vhost_bytes(), generations(apache)

    try:
        r = tool(apache, "apply")
    finally:
        # apache2ctl stop parses the config: leave it valid, or teardown waits for its timeout.
        (apache.confdir / "conf-enabled" / broken.name).unlink()
    assert r.doc["result"] == "refused", r
    assert "already fails" in r.doc["message"] and "ThisIsNotADirective" in r.stderr + r.stdout, r
    # The plan runs (it must know whether the breakage is an edit of our own snippet, which it would
    # roll back); it is not, so the run stops there: nothing is backed up, written or reloaded.
    assert r.step_names() == ["lock", "configtest", "locate", "plan"], r
    assert not any(s["name"] in ("backup", "journal", "write", "reload") for s in r.steps), r
    assert backup_files(apache) == [], "nothing may be written when the config is already broken"
    assert generations(apache) == gens
    assert_nothing_left_changed(apache, original, r, code=2)


# ------------------------------------------------------------------ 5. reload that fails


def _graceful_failing_wrapper(root: Path, fail_first: int) -> Path:
    """A directory holding an ``apache2ctl`` that fails the first ``fail_first`` gracefuls, passes the rest."""
    bindir = root / "wrapper-bin"
    bindir.mkdir()
    w = bindir / "apache2ctl"
    w.write_text(
        "#!/bin/sh\n"
        "# test wrapper: every command goes to Debian's apache2ctl except the first %(n)d graceful(s)\n"
        'if [ "$1" = graceful ] || [ "$1 $2" = "-k graceful" ]; then\n'
        '  n=$(cat "%(d)s/graceful-count" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "%(d)s/graceful-count"\n'
        '  if [ "$n" -le %(n)d ]; then echo "wrapper: graceful #$n fails on purpose" >&2; exit 1; fi\n'
        "fi\n"
        'exec /usr/sbin/apache2ctl "$@"\n' % {"n": fail_first, "d": bindir}
    )
    w.chmod(0o755)
    return bindir


def _gracefuls(bindir: Path) -> int:
    f = bindir / "graceful-count"
    return int(f.read_text()) if f.exists() else 0


def test_reload_tested(apache: ApacheInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction's reload is ``apache2ctl -k graceful``, and it is also the changed configuration's test.

    Safe only because ``apache2 -k graceful`` parses the configuration itself and
    refuses to signal a broken one: a broken configuration (a real file, real
    Apache) leaves the same master serving the old generation.
    """
    from dataone_cn_sslverify import apachectl

    for k, v in apache.env().items():
        monkeypatch.setenv(k, v)
    pid, gens = apache.pid(), generations(apache)
    broken = apache.enable_conf("zz-broken-meanwhile", "ThisIsNotADirective on\n")
    try:
        r = apachectl.graceful(wait=5.0, one_parse=True)
    finally:
        (apache.confdir / "conf-enabled" / broken.name).unlink()
    assert not r.ok and "-k graceful" in r.detail and "ThisIsNotADirective" in r.detail, r
    assert apache.pid() == pid and generations(apache) == gens, "a broken configuration was signalled"
    assert_original_behaviour(apache)
    # And on a good configuration it is a real graceful reload: one new generation.
    r = apachectl.graceful(wait=10.0, one_parse=True)
    assert r.ok and r.done, r
    assert apache.pid() == pid and generations(apache) == gens + 1, r


def test_failed_reload_is_rolled_back(apache: ApacheInstance) -> None:
    bindir = _graceful_failing_wrapper(apache.root, fail_first=1)
    original = apache.vhost_bytes()

    r = tool(apache, "apply", path_prefix=bindir)
    assert r.doc["result"] == "rolled-back", r
    assert "reload failed" in r.doc["message"] and "fails on purpose" in r.doc["message"], r
    assert [s["name"] for s in r.steps if not s["ok"]] == ["reload"], r
    assert _gracefuls(bindir) == 2, "the wrapper was not used, or the rollback did not reload"
    assert_nothing_left_changed(apache, original, r, code=1)


def test_reload_failing_also_in_rollback_exits_3_with_the_manual_commands(apache: ApacheInstance) -> None:
    bindir = _graceful_failing_wrapper(apache.root, fail_first=1000)
    original = apache.vhost_bytes()

    r = tool(apache, "apply", path_prefix=bindir)
    assert r.code == 3 and r.doc["result"] == "unrestored", r
    backup = r.doc["backup"]
    assert backup and Path(backup).read_bytes() == original
    # The file itself was put back; what is left to run is the reload, exactly as a person types it
    # (this instance's APACHE_CONFDIR, every word shell-quoted).
    env = "env %s %s " % tuple(shlex.quote("%s=%s" % (k, apache.env()[k])) for k in ("APACHE_CONFDIR", "APACHE_ENVVARS"))
    manual = "%sapache2ctl configtest && %sapache2ctl graceful" % (env, env)
    assert "Run by hand: " + manual in r.doc["message"] and manual in r.stderr, r
    assert "reload failed" in r.doc["message"], r
    assert apache.vhost_bytes() == original
    assert temp_leftovers(apache) == []
    assert_original_behaviour(apache)
    # The journal stays so that the next run finishes the job (the reload is still owed) ...
    assert journal_path(apache).exists(), r

    # ... and while reloads keep failing, the next run must not pretend it recovered.
    st = tool(apache, "status", path_prefix=bindir)
    assert st.code == 3, "recovery whose reload failed must not report success:\n%s" % st
    assert journal_path(apache).exists()
    assert "apache2ctl graceful" in st.stderr + st.stdout, st

    # Once the operator has fixed apache2ctl, the next run recovers and says so.
    gens = generations(apache)
    st = tool(apache, "status")
    assert st.code == 0 and "recover" in st.stderr, st
    assert not journal_path(apache).exists()
    assert generations(apache) == gens + 1
    assert apache.vhost_bytes() == original
    assert_original_behaviour(apache)


# ------------------------------------------------------------------ 6. live check that fails


def test_status_and_apply_refuse_a_split_block(apache: ApacheInstance) -> None:
    """A vhost-level ``SSLVerifyClient optional`` after the block (outside it): refused, nothing changed."""
    original = apache.vhost_bytes()
    # after SSLCertificateFile, so a non-verification directive separates it from the block
    split = original.replace(b"\tSSLCertificateKeyFile ", b"\tSSLVerifyClient optional\n\tSSLCertificateKeyFile ", 1)
    apache.write_vhost(split)
    assert apache.graceful().ok
    assert_original_behaviour(apache, safari_asked=True)  # now everyone is asked in the handshake

    st = tool(apache, "status")
    assert st.code == 0, st
    (vh,) = st.doc["vhosts"]
    assert vh["state"] == "unrecognised" and "split" in (vh["reason"] or ""), st

    r = tool(apache, "apply")
    assert r.doc["result"] == "refused" and "split" in r.doc["message"], r
    assert backup_files(apache) == []
    assert_nothing_left_changed(apache, split, r, code=2, safari_asked=True)


def test_live_check_failure_is_rolled_back(apache: ApacheInstance) -> None:
    """Another enabled conf asks every client on /cn: the vhost is patched fine, the live check fails."""
    apache.enable_conf("local-cn-verify", '# a local override the operator forgot about\n'
                                          '<Location "/cn">\n\tSSLVerifyClient optional\n</Location>\n')
    assert apache.graceful().ok
    original, gens = apache.vhost_bytes(), generations(apache)
    assert tool(apache, "status").doc["vhosts"][0]["state"] == "original:webkit-only"

    r = tool(apache, "apply")
    assert r.doc["result"] == "rolled-back", r
    probe_step = [s for s in r.steps if s["name"] == "probe"]
    assert len(probe_step) == 1 and not probe_step[0]["ok"], r
    assert "browser-ie11-win7/1.2/nocert/reneg (User-Agent" in probe_step[0]["detail"], r
    assert "was asked for a client certificate on /cn/ (renegotiation)" in probe_step[0]["detail"], r
    assert "live check failed" in r.doc["message"], r
    # The rollback reloaded: one graceful for the change, one for the rollback.
    assert generations(apache) == gens + 2
    rollback = [s for s in r.steps if s["name"] == "rollback"]
    assert rollback and all(s["ok"] for s in rollback) and any("reloaded" in s["detail"] for s in rollback), r
    assert_nothing_left_changed(apache, original, r, code=1, safari_asked=True)


# ------------------------------------------------------------------ 10. concurrency


def test_second_apply_waits_a_bounded_time_and_names_the_holder(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    os.makedirs(str(apache.state_dir), mode=0o700, exist_ok=True)
    fd = os.open(str(apache.state_dir / "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"pid %d, held by the integration test\n" % os.getpid(), 0)
        r = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_LOCK_TIMEOUT": "1.5"})
    finally:
        os.close(fd)
    assert r.doc["result"] == "refused", r
    assert 1.5 <= r.seconds < 15, "did not wait the bounded time: %.2fs" % r.seconds
    assert "held by the integration test" in r.doc["message"] and str(os.getpid()) in r.doc["message"], r
    assert r.step_names() == ["lock"], r
    assert backup_files(apache) == []
    assert_nothing_left_changed(apache, original, r, code=2)


def test_two_concurrent_applies_change_once(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    gens = generations(apache)
    os.makedirs(str(apache.state_dir), mode=0o700, exist_ok=True)
    # Hold the lock while both start, so that both are inside their wait when it is released.
    fd = os.open(str(apache.state_dir / "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        procs = [spawn(apache, "apply") for _ in range(2)]
        time.sleep(1.5)
        assert all(p.poll() is None for p in procs), "an apply did not wait for the lock"
    finally:
        os.close(fd)
    runs = [finish(p, ["apply", "#%d" % i]) for i, p in enumerate(procs)]
    assert all(r.code == 0 for r in runs), "\n".join(map(str, runs))
    assert sorted(r.doc["result"] for r in runs) == ["changed", "unchanged"], "\n".join(map(str, runs))
    assert apache.vhost_bytes() == expected_applied(apache, original)
    assert apache.vhost_bytes().count(BEGIN) == 1
    assert len([b for b in backup_files(apache) if not b.endswith(".json")]) == 1
    assert generations(apache) == gens + 1
    assert not journal_path(apache).exists()
    assert_applied_behaviour(apache)


# ------------------------------------------------------------------ 11. Apache not running


def test_apply_while_apache_is_stopped_does_not_start_it(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = apache_instance_factory("webkit-only")
    assert not inst.is_running()
    original = inst.vhost_bytes()

    r = tool(inst, "apply")
    assert r.code == 0 and r.doc["result"] == "changed", r
    reload_step = [s for s in r.steps if s["name"] == "reload"]
    assert len(reload_step) == 1 and reload_step[0]["ok"], r
    assert "not running" in reload_step[0]["detail"] and "next start" in reload_step[0]["detail"], r
    assert "configtest" in r.step_names()[5:], "the changed config must be tested even when Apache is stopped"
    assert inst.processes() == [], "the tool started a stopped Apache"
    assert inst.vhost_bytes() == expected_applied(inst, original)
    assert not journal_path(inst).exists()

    inst.start()
    assert_applied_behaviour(inst)


# ------------------------------------------------------------------ 12. backups and restore


def test_backups_are_pruned_listed_and_restorable(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    applied = expected_applied(apache, original)
    ids = []
    for _ in range(6):
        for op, after in (("apply", applied), ("revert", original)):
            r = tool(apache, op, "--no-probe")
            assert r.code == 0 and r.doc["result"] == "changed", r
            assert apache.vhost_bytes() == after
            ids.append(os.path.basename(r.doc["backup"]))
    assert len(set(ids)) == 12

    lst = tool(apache, "backups")
    assert lst.code == 0, lst
    listed = lst.doc["backups"]
    assert [b["id"] for b in listed] == list(reversed(ids))[:10], "newest 10, newest first"
    files = backup_files(apache)
    assert len(files) == 20 and not any(i in f for i in ids[:2] for f in files), files
    for b in listed:
        assert {"id", "created", "size", "sha256"} <= set(b), b
        data = (apache.state_dir / "backups" / b["id"]).read_bytes()
        assert b["size"] == len(data) and b["sha256"] == hashlib.sha256(data).hexdigest(), b
        assert data == (original if b["id"].split("-")[1] == "apply" else applied), b["id"]
    st = os.stat(str(apache.state_dir))
    assert stat.S_IMODE(st.st_mode) == 0o700

    # apply once more, then restore the backup that apply took: the original bytes come back.
    r = tool(apache, "apply")
    assert r.code == 0 and r.doc["result"] == "changed", r
    pre_apply = os.path.basename(r.doc["backup"])
    assert len(tool(apache, "backups").doc["backups"]) == 10
    gens = generations(apache)
    rs = tool(apache, "restore", pre_apply)
    assert rs.code == 0 and rs.doc["result"] == "changed", rs
    names = rs.step_names()
    assert names[:2] == ["lock", "configtest"] and names[-1] == "commit", rs
    for step in ("backup", "journal", "write", "reload"):
        assert step in names, rs
    assert names.index("write") < names.index("configtest", 2) < names.index("reload"), rs
    assert apache.vhost_bytes() == original
    assert generations(apache) == gens + 1
    assert not journal_path(apache).exists()
    assert_original_behaviour(apache)

    # Restoring again: the file already holds those bytes.
    again = tool(apache, "restore", pre_apply)
    assert again.code == 0 and again.doc["result"] == "unchanged", again

    # An unknown id: refused, nothing changed.
    before = backup_files(apache)
    bad = tool(apache, "restore", "20000101T000000_000000-apply-cn-ssl.conf")
    assert "no backup" in bad.doc["message"], bad
    assert backup_files(apache) == before
    assert_nothing_left_changed(apache, original, bad, code=2)


# ------------------------------------------------------------------ 13. symlinked vhost


def test_symlinked_vhost_is_edited_at_its_target_keeping_mode_and_owner(apache: ApacheInstance) -> None:
    link_target = os.readlink(str(apache.vhost_link))
    os.chmod(str(apache.vhost_path), 0o640)
    os.chown(str(apache.vhost_path), 33, 4)  # www-data:adm -- anything but root:root
    original = apache.vhost_bytes()

    def check(expected: bytes) -> None:
        assert apache.vhost_link.is_symlink() and os.readlink(str(apache.vhost_link)) == link_target
        st = os.stat(str(apache.vhost_path))
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 33, 4)
        assert apache.vhost_bytes() == expected
        assert temp_leftovers(apache) == []

    r = tool(apache, "apply")
    assert r.code == 0 and r.doc["result"] == "changed", r
    check(expected_applied(apache, original))
    assert_applied_behaviour(apache)

    r = tool(apache, "revert")
    assert r.code == 0 and r.doc["result"] == "changed", r
    check(original)
    assert_asked(apache, IE11)


# ------------------------------------------------------------------ 14. the policy file is edited later: test_policy_live.py


# ------------------------------------------------------------------ 15. interrupted: Ctrl-C, ssh drop, kill


@pytest.mark.parametrize("failpoint", ["int:reload", "term:probe", "hup:configtest"])
def test_interrupted_apply_is_rolled_back_at_once(apache: ApacheInstance, failpoint: str) -> None:
    """A real SIGINT/SIGTERM/SIGHUP after the write takes the rollback path before the process exits."""
    original = apache.vhost_bytes()
    r = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": failpoint})
    assert (r.code, r.doc["result"]) == (1, "rolled-back"), r
    assert "interrupted" in r.doc["message"], r
    assert_nothing_left_changed(apache, original, r, code=1)
