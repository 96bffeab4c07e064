"""Nothing on disk is trusted, and what a person reads is honest.

Planted and corrupt state (a state dir someone else owns, symlinks where the
tool creates files, a crafted journal, crafted backup records, a corrupt
journal) and hostile or unusual configuration text (terminal escapes, UTF-8,
3,000-deep nesting, a configtest error next to an include named
``localized-error-pages.conf``), each against a real Apache. Every test
checks the files a person would check (the victim file untouched, the vhost
as it was) and what the command says.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from harness import ApacheInstance
from transaction_support import (
    assert_applied_behaviour, assert_original_behaviour, expected_applied, generations, journal_path,
    temp_leftovers, tool,
)

pytestmark = pytest.mark.integration

NOBODY = 65534


def _victim(inst: ApacheInstance, name: str = "victim.txt") -> Path:
    """A file outside everything the tool may write, with known bytes."""
    v = inst.root / name
    v.write_bytes(b"precious bytes of someone else\n")
    return v


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ the state dir


@pytest.mark.parametrize("where", ["state-dir", "parent"])
def test_state_dir_others_can_write_is_refused(apache: ApacheInstance, where: str) -> None:
    original = apache.vhost_bytes()
    gens = generations(apache)
    env = {}
    if where == "state-dir":
        d = apache.state_dir
        d.mkdir(mode=0o700)
        os.chown(str(d), NOBODY, NOBODY)
        os.chmod(str(d), 0o777)
    else:
        parent = apache.root / "shared"
        parent.mkdir()
        os.chmod(str(parent), 0o777)
        d = parent / "state"
        env = {"DATAONE_CN_SSLVERIFY_STATE_DIR": str(d)}

    r = tool(apache, "apply", extra_env=env)

    assert r.code == 2 and r.doc["result"] == "refused", str(r)
    msg = r.doc["message"]
    if where == "state-dir":
        assert str(d) in msg and "uid %d" % NOBODY in msg and "chmod 0700 %s" % d in msg and "chown" in msg, msg
        assert os.listdir(str(d)) == [], "nothing may be created in an untrusted state dir"
    else:
        assert str(parent) in msg and "chmod go-w %s" % parent in msg, msg
        assert not d.exists()
    assert apache.vhost_bytes() == original and generations(apache) == gens
    assert_original_behaviour(apache)


def test_links_planted_where_the_tool_creates_files_are_not_followed(apache: ApacheInstance) -> None:
    """Symlinks at the temp names (beside the vhost, in the state dir) point at a victim: it is never written."""
    v1, v2 = _victim(apache, "victim1.txt"), _victim(apache, "victim2.txt")
    before = v1.read_bytes()
    apache.state_dir.mkdir(mode=0o700)
    (apache.state_dir / "backups").mkdir(mode=0o700)
    os.symlink(str(v1), str(apache.vhost_path.parent / ".cn-ssl.conf.dataone-cn-sslverify.tmp"))
    os.symlink(str(v2), str(apache.state_dir / ".journal.json.dataone-cn-sslverify.tmp"))

    r = tool(apache, "apply")

    assert r.code == 0, str(r)
    assert v1.read_bytes() == before and v2.read_bytes() == before, "a planted link was written through"
    assert apache.vhost_bytes() == expected_applied(apache)
    assert not apache.vhost_path.is_symlink() and temp_leftovers(apache) == []
    assert_applied_behaviour(apache)


# ------------------------------------------------------------------ crafted journal and backup records


def _plant_backup(inst: ApacheInstance, bid: str, data: bytes, path: Path, **extra: object) -> Path:
    b = inst.state_dir / "backups"
    b.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(str(inst.state_dir), 0o700)
    f = b / bid
    f.write_bytes(data)
    rec = dict(id=bid, path=str(path), created=time.time() - 86400 * 365, size=len(data), sha256=_sha(data),
               mode=0o644, uid=0, gid=0, op="apply", file=str(f))
    rec.update(extra)
    (b / (bid + ".json")).write_text(json.dumps(rec))
    return f


def test_crafted_journal_naming_another_file_is_never_acted_on(apache: ApacheInstance) -> None:
    victim = _victim(apache)
    cur = victim.read_bytes()
    planted = _plant_backup(apache, "20200101T000000_000000-apply-victim.txt", b"attacker's bytes\n", victim)
    journal_path(apache).write_text(json.dumps({
        "version": 2, "op": "apply", "pid": 1, "started": 0, "running_before": True, "step": "written",
        "files": [{"path": str(victim), "sha256_before": _sha(b"attacker's bytes\n"), "sha256_written": _sha(cur),
                   "backup": str(planted)}]}))

    st = tool(apache, "status")
    assert victim.read_bytes() == cur, "status wrote a file the journal named"
    assert st.code == 0, str(st)
    assert "the journal at %s is unreadable" % journal_path(apache) in st.stderr, str(st)
    assert "Apache does not load" in st.stderr and "discard-journal" in st.stderr, str(st)

    ap = tool(apache, "apply")
    assert ap.code == 3 and "discard-journal" in ap.doc["message"], str(ap)
    assert victim.read_bytes() == cur and apache.vhost_bytes() == apache.rendered_vhost()
    assert_original_behaviour(apache)


def test_crafted_backup_record_cannot_restore_elsewhere_and_is_never_pruned(apache: ApacheInstance) -> None:
    victim = _victim(apache)
    cur = victim.read_bytes()
    bid = "20200101T000000_000000-apply-victim.txt"
    _plant_backup(apache, bid, b"attacker's bytes\n", victim)

    r = tool(apache, "restore", bid)
    assert r.code == 2 and "which is not the CN vhost Apache loads" in r.doc["message"], str(r)
    assert victim.read_bytes() == cur

    # Old records of the vhost whose "file" names the victim: not ours, so never listed nor pruned.
    for i in range(12):
        _plant_backup(apache, "20200101T0000%02d_000000-apply-cn-ssl.conf" % i, b"x", apache.vhost_path, file=str(victim))
    assert tool(apache, "apply").code == 0
    assert victim.exists() and victim.read_bytes() == cur, "prune deleted a file a record named"
    listed = tool(apache, "backups").doc["backups"]
    assert all(b["file"].startswith(str(apache.state_dir / "backups")) for b in listed), listed
    assert not any(b["file"] == str(victim) for b in listed), listed


# ------------------------------------------------------------------ a corrupt journal


def test_corrupt_journal_leaves_read_only_commands_working_and_can_be_discarded(apache: ApacheInstance) -> None:
    apache.state_dir.mkdir(mode=0o700)
    garbage = b'{"op": "apply", "files": [tru'
    journal_path(apache).write_bytes(garbage)
    said = "the journal at %s is unreadable" % journal_path(apache)

    for cmd in (["status"], ["backups"], ["diff"], ["check", "--no-live"]):
        r = tool(apache, *cmd)
        assert r.code != 3 and said in r.stderr and "internal error" not in r.stderr, str(r)
    assert tool(apache, "status").code == 0 and tool(apache, "diff").code == 0

    ap = tool(apache, "apply")
    assert ap.code == 3 and said in ap.doc["message"] and "dataone-cn-sslverify discard-journal" in ap.doc["message"], str(ap)
    assert apache.vhost_bytes() == apache.rendered_vhost()

    d = tool(apache, "discard-journal")
    assert d.code == 0 and Path(d.doc["kept"]).read_bytes() == garbage, str(d)
    assert not journal_path(apache).exists()
    assert tool(apache, "apply").code == 0
    assert_applied_behaviour(apache)


# ------------------------------------------------------------------ honest output


def test_terminal_escapes_and_utf8_from_the_vhost_are_shown_escaped(apache: ApacheInstance) -> None:
    data = apache.vhost_bytes()
    hostile = data.replace(b"\tServerAdmin ", b"\tServerAlias evil\x1b]0;owned\x07.example\x1b[2J caf\xe2\x80\x99e.example\n"
                           b"\tServerAdmin ", 1)
    assert hostile != data
    apache.write_vhost(hostile)
    assert apache.configtest().ok

    for cmd in (["status"], ["apply", "--no-probe"]):
        r = tool(apache, *cmd, as_json=False)
        assert "\x1b" not in r.stderr and "\x07" not in r.stderr, repr(r.stderr)

    # The name status prints: escapes shown as such, UTF-8 shown as the character it is.
    named = hostile.replace(b"\tServerName cn.dataone.test\n", b"\tServerName caf\xe2\x80\x99e\x1b[2J.test\n", 1)
    assert named != hostile
    apache.write_vhost(named)
    st = tool(apache, "status", as_json=False)
    assert "caf\u2019e\\e[2J.test" in st.stderr, repr(st.stderr)


def test_status_names_the_real_configtest_error(apache: ApacheInstance) -> None:
    """An enabled conf named localized-error-pages and a broken vhost: status names AH00526 and the vhost's line."""
    apache.enable_conf("localized-error-pages", "# error pages\n")
    data = apache.vhost_bytes()
    broken = data.replace(b"\tServerAdmin ", b"\tNoSuchDirective here\n\tServerAdmin ", 1)
    apache.write_vhost(broken)
    line = broken[:broken.index(b"NoSuchDirective")].count(b"\n") + 1

    r = tool(apache, "status", as_json=False)
    cfg = [ln for ln in r.stderr.splitlines() if ln.startswith("apache:")]
    assert cfg and "AH00526" in cfg[0] and "line %d of %s" % (line, apache.vhost_link) in cfg[0], r.stderr
    assert "NoSuchDirective" in cfg[0] and "localized-error-pages" not in cfg[0], cfg


def test_deep_nesting_is_refused_with_a_clear_message(apache: ApacheInstance) -> None:
    depth = 3000
    deep = b"<IfModule mod_ssl.c>\n" * depth + b"</IfModule>\n" * depth
    apache.write_vhost(apache.vhost_bytes() + deep)
    assert apache.configtest().ok, "Apache accepts it"
    original = apache.vhost_bytes()
    for cmd in ("status", "apply"):
        r = tool(apache, cmd)
        assert r.code == 2, str(r)
        assert "nested more than" in r.stderr and "internal error" not in r.stderr, str(r)
        assert "cn-ssl.conf:" in r.stderr
    assert apache.vhost_bytes() == original


@pytest.mark.parametrize("apache", ["webkit-if-else"], indirect=True)
def test_revert_of_webkit_if_else_warns_about_replication(apache: ApacheInstance) -> None:
    assert tool(apache, "apply").code == 0
    r = tool(apache, "revert")
    assert r.code == 0, str(r)
    assert "replication accepts clients without a certificate again" in r.doc["message"], str(r)
    assert "warning:" in r.stderr


def test_a_curly_quote_in_the_block_is_named_and_pointed_at(apache: ApacheInstance) -> None:
    data = apache.vhost_bytes()
    curly = data.replace(b'=~ /webkit/i )">', b'=~ /webkit/i )\xe2\x80\x9d>', 1)
    assert curly != data
    apache.write_vhost(curly)
    line = curly[:curly.index(b"\xe2\x80\x9d")].count(b"\n") + 1
    for cmd in ("status", "apply"):
        r = tool(apache, cmd, as_json=False)
        assert "\u201d" in r.stderr and "\xe2\x80" not in r.stderr and "\\x80" not in r.stderr, r.stderr
        assert "%s:%d:" % (apache.vhost_path, line) in r.stderr and "U+201D, bytes e2 80 9d" in r.stderr, r.stderr
        assert "^" in r.stderr
    assert apache.vhost_bytes() == curly
