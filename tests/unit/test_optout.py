"""The administrator's opt-out record and the status lines built from Apache's words (no Apache needed)."""

import json
import os
import stat
from pathlib import Path

from dataone_cn_sslverify import hoststate, optout


def test_record_read_clear(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SUDO_USER", "alice")
    state = tmp_path / "state"
    assert optout.read(str(state)) is None
    rec = optout.record(str(state), "/etc/apache2/sites-available/cn-ssl.conf")
    assert rec.user == "alice"
    assert stat.S_IMODE(os.stat(optout.path(str(state))).st_mode) == 0o600
    got = optout.read(str(state))
    assert got is not None and (got.user, got.vhost) == ("alice", "/etc/apache2/sites-available/cn-ssl.conf")
    assert got.describe().startswith("disabled by the administrator (alice, ") and " UTC on " in got.describe()
    assert optout.clear(str(state)) is True and optout.read(str(state)) is None
    assert optout.clear(str(state)) is False


def test_user_without_sudo_is_the_login_or_effective_user(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert optout.current_user()


def test_an_unreadable_record_still_counts(tmp_path: Path) -> None:
    p = Path(optout.path(str(tmp_path)))
    for bad in (b"{not json", b'{"disabled_by": 3, "time": "x"}', b"\xff\xfe", b"[]"):
        p.write_bytes(bad)
        got = optout.read(str(tmp_path))
        assert got is not None and got.problem and "record unreadable" in got.describe(), bad
    p.unlink()
    os.mkfifo(str(p))  # a FIFO must not block the reader
    got = optout.read(str(tmp_path))
    assert got is not None and "not a regular file" in got.problem


def test_a_planted_symlink_is_neither_followed_nor_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    p = Path(optout.path(str(tmp_path)))
    p.symlink_to(target)
    assert optout.read(str(tmp_path)).problem  # type: ignore[union-attr]
    optout.record(str(tmp_path), "")
    assert target.read_text() == "keep me\n" and not p.is_symlink()
    assert json.loads(p.read_text())["disabled_by"]


def test_broken_at_reads_apaches_words() -> None:
    err = ("AH00526: Syntax error on line 2 of /etc/apache2/conf-enabled/zz-local.conf: Invalid command "
           "'ThisIsNotADirective', perhaps misspelled")
    assert hoststate.broken_at(err) == "/etc/apache2/conf-enabled/zz-local.conf:2"
    assert hoststate.broken_line(err).startswith(
        "not applied: configuration broken by /etc/apache2/conf-enabled/zz-local.conf:2 (AH00526")
    assert hoststate.broken_at("apache2: Could not open configuration file /x: No such file") is None
