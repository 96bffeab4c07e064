"""reverter and store on a temp dir: journal validation, the bytes rule, compare-and-swap, state dir checks."""

import os

import pytest

from dataone_cn_sslverify import reverter, store
from dataone_cn_sslverify.errors import ExitCode


def _store(tmp_path):
    s = store.Store(str(tmp_path / "state"))
    s.ensure()
    return s


def test_journal_round_trip_and_version_1(tmp_path):
    s = _store(tmp_path)
    j = reverter.Journal(op="apply", pid=1, started=0.0, running_before=True, target=("127.0.0.1", 443, "cn"))
    rv = reverter.Reverter(s, j)
    f = tmp_path / "v.conf"
    f.write_bytes(b"old")
    rv.checkpoint(str(f), b"old", b"new", None if False else s.backup(str(f), b"old", "apply").file)
    back = reverter.Journal.from_json(s.read_journal(), s.journal_path)
    assert back == rv.journal
    v1 = {"op": "apply", "pid": 2, "file": str(f), "backup": back.files[0].backup,
          "before_sha256": store.sha256(b"old"), "after_sha256": store.sha256(b"new"), "step": "written"}
    assert reverter.Journal.from_json(v1, "j").files[0].sha256_written == store.sha256(b"new")


@pytest.mark.parametrize("bad", [[], {"op": "apply"}, {"op": "apply", "pid": 1, "files": [{"path": "rel",
                                  "sha256_written": "0" * 64}]},
                                 {"op": "apply", "pid": 1, "files": [{"path": "/x", "sha256_written": "zz"}]},
                                 {"op": "apply", "pid": 1, "step": "bogus", "files": []}])
def test_malformed_journals_are_unreadable(bad):
    with pytest.raises(store.JournalUnreadable) as e:
        reverter.Journal.from_json(bad if isinstance(bad, dict) else {"files": bad}, "/s/journal.json")
    assert e.value.exit_code == ExitCode.UNRESTORED and "/s/journal.json" in str(e.value)


def test_undo_puts_back_only_our_bytes_and_keeps_both_otherwise(tmp_path):
    s = _store(tmp_path)
    a, b, c = (tmp_path / n for n in ("a.conf", "b.conf", "c.conf"))
    for f in (a, b):
        f.write_bytes(b"before")
    rv = reverter.Reverter(s, reverter.Journal(op="apply", pid=1, started=0.0, running_before=False))
    for f in (a, b):
        rv.checkpoint(str(f), b"before", b"ours", s.backup(str(f), b"before", "apply").file)
        f.write_bytes(b"ours")
    rv.checkpoint(str(c), None, b"created", None)
    c.write_bytes(b"created")
    b.write_bytes(b"someone else's")
    seen = []
    undo = rv.undo(False, lambda *x: seen.append(x))
    assert not undo.ok and "changed by someone else" in undo.problem and "both versions kept" in undo.problem
    assert b.read_bytes() == b"someone else's" and not c.exists()  # c undone first (reverse order), b kept
    assert "discard-journal" in undo.manual and os.path.exists(s.journal_path)
    b.write_bytes(b"ours")
    undo = rv.undo(False, lambda *x: None)
    assert undo.ok and a.read_bytes() == b.read_bytes() == b"before" and not os.path.exists(s.journal_path)


def test_cas_write_refuses_changed_bytes_and_never_follows_a_planted_temp(tmp_path):
    t = tmp_path / "v.conf"
    t.write_bytes(b"basis")
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    os.symlink(str(victim), store.temp_path(str(t)))
    with pytest.raises(store.ChangedMeanwhile):
        store.cas_write(str(t), b"new", b"other basis")
    assert t.read_bytes() == b"basis" and victim.read_bytes() == b"victim"
    assert not os.path.lexists(store.temp_path(str(t)))
    store.cas_write(str(t), b"new", b"basis")
    assert t.read_bytes() == b"new"


def test_state_dir_owned_by_someone_else_or_open_is_refused(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    store.check_state_dir(str(d))
    os.chmod(str(d), 0o777)
    with pytest.raises(store.UnsafeStateDir) as e:
        store.check_state_dir(str(d))
    assert e.value.exit_code == ExitCode.REFUSED and "chmod 0700 %s" % d in str(e.value)
    os.chmod(str(d), 0o700)
    os.chmod(str(tmp_path), 0o777)
    try:
        with pytest.raises(store.UnsafeStateDir):
            store.check_state_dir(str(d))
        os.chmod(str(tmp_path), 0o1777)
        store.check_state_dir(str(d))  # sticky, like /tmp
    finally:
        os.chmod(str(tmp_path), 0o700)


def test_backup_ids_and_prune_stay_inside_the_backups_dir(tmp_path):
    s = _store(tmp_path)
    assert store.BACKUP_ID.match("20261201T215252_123456-apply-cn-ssl.conf")
    assert not store.BACKUP_ID.match("../../etc/passwd") and not store.BACKUP_ID.match("x-apply-a/b")
    assert s.is_backup_file(os.path.join(s.backups_dir, "20261201T215252_123456-apply-x"))
    assert not s.is_backup_file("/etc/passwd")
