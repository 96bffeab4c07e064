"""The policy file and its live copy against a real Apache 2.4.

The policy file (the dpkg conffile, relocated into the instance) is the
administrator's: after every run, on every path, its bytes are compared with
what they were before. What Apache loads is the live copy, which only a
successful apply changes; a refused or failing edit is never in a path Apache
reads, so someone else's reload (logrotate's graceful) cannot load it.
Faults are real: edits Apache itself rejects, another file that breaks the
configuration, a SIGKILL in the middle of an apply.
"""

import subprocess
from typing import Callable, Optional

import pytest
from pathlib import Path

from harness import ApacheInstance, render_placeholders
from harness import FIXTURES_DIR
from transaction_support import (
    BEGIN, END, assert_applied_behaviour, assert_nothing_left_changed, assert_original_behaviour, backup_files,
    expected_applied, generations, journal_path, live_header, live_path, tool,
)

pytestmark = pytest.mark.integration

OPT_IN = (b"#SSLProtocol -all +TLSv1.2", b"SSLProtocol -all +TLSv1.2")
SHIPPED = (Path(__file__).resolve().parents[2] / "conf" / "cn-sslverify.conf").read_bytes()


def _line(needle: bytes) -> int:
    """1-based line of the first line of the shipped policy file holding needle."""
    return next(i for i, ln in enumerate(SHIPPED.split(b"\n"), 1) if needle in ln)


LINES = {"none": _line(b"SSLVerifyClient none"), "loc": _line(b'<Location "/cn">'), "if_": _line(b"<If "),
         "endif": _line(b"</If>") + 1, "depth": _line(b"SSLVerifyDepth 10"), "proto": _line(b"#SSLProtocol")}


def tls13_negotiable(inst: ApacheInstance) -> bool:
    """Does the vhost complete a TLS 1.3 handshake (with its SNI name)? Asked with openssl s_client."""
    p = subprocess.run(["/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:%d" % inst.https_port,
                        "-servername", inst.server_name, "-tls1_3", "-brief"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=20, check=False)
    return p.returncode == 0 and "Protocol version: TLSv1.3" in p.stdout


def status_policy(inst: ApacheInstance) -> str:
    r = tool(inst, "status")
    assert r.code == 0, r
    return r.doc["policy"]["status"]


def live_bytes(inst: ApacheInstance) -> Optional[bytes]:
    p = live_path(inst)
    return p.read_bytes() if p.exists() else None


# ------------------------------------------------------------------ the live copy


def test_apply_includes_the_live_copy_and_never_writes_the_policy_file(apache: ApacheInstance) -> None:
    conf = apache.policy_path.read_bytes()
    original = apache.vhost_bytes()
    assert status_policy(apache) == "not live yet: run apply"
    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (0, "changed"), r
    assert apache.vhost_bytes() == expected_applied(apache, original)
    assert live_bytes(apache) == live_header(apache, conf) + conf
    assert apache.policy_path.read_bytes() == conf
    assert status_policy(apache).startswith("live")
    assert_applied_behaviour(apache)
    # The policy file is no longer what Apache reads: breaking it changes nothing live.
    apache.policy_path.write_bytes(conf + b"ThisIsNotADirective\n")
    assert apache.configtest().ok
    apache.policy_path.write_bytes(conf)
    # After a revert the copy stays on disk, but no vhost includes it: status must not call it live.
    r = tool(apache, "revert")
    assert (r.code, r.doc["result"]) == (0, "changed"), r
    assert live_bytes(apache) is not None
    assert status_policy(apache).startswith("not included: no vhost Apache loads includes the live copy")


# ------------------------------------------------------------------ refusals: before anything is written


CONTRACT_BREAKS = {
    "negative-depth": (b"SSLVerifyDepth 10", b"SSLVerifyDepth -1", ":{depth}: SSLVerifyDepth -1"),
    "bad-regex-flag": (b"webkit)/i )", b"webkit)/iq )", ":{if_}: regex flags 'iq'"),
    "exempts-every-client": (b"webkit)/i", b"webkit|.)/i", ":{if_}: /(windows|chrome|mozilla|safari|webkit|.)/i matches the API clients curl"),
    "drops-browsers": (b"(windows|chrome|mozilla|", b"(chrome|", ":{if_}: /(chrome|safari|webkit)/i does not match the browsers"),
    "replication": (b"#SSLProtocol", b'<Location "/metacat/servlet/replication">\n    SSLVerifyClient none\n</Location>\n#SSLProtocol',
                    ":{proto}: touches replication"),
}


@pytest.mark.parametrize("how", sorted(CONTRACT_BREAKS))
@pytest.mark.parametrize("applied", [False, True], ids=["first-apply", "edit-after-apply"])
def test_an_edit_breaking_the_contract_is_refused_with_file_and_line_and_changes_nothing(
        apache: ApacheInstance, how: str, applied: bool) -> None:
    if applied:
        assert tool(apache, "apply").code == 0
    old, new, where = CONTRACT_BREAKS[how]
    where = where.format(**LINES)
    edited = apache.policy_path.read_bytes().replace(old, new, 1)
    apache.policy_path.write_bytes(edited)
    vhost, live, gens, backups = apache.vhost_bytes(), live_bytes(apache), generations(apache), backup_files(apache)

    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (2, "refused"), r
    assert str(apache.policy_path) + where in r.doc["message"], r
    assert "nothing changed" in r.doc["message"], r
    assert apache.policy_path.read_bytes() == edited  # the administrator's file, as they left it
    assert live_bytes(apache) == live and backup_files(apache) == backups and generations(apache) == gens
    assert_nothing_left_changed(apache, vhost, r, code=2, behaviour="applied" if applied else "original")
    assert status_policy(apache).startswith(("edited, rejected: " if applied else "not live; rejected: ")
                                            + str(apache.policy_path) + where.split(" ")[0])
    # Someone else's reload (logrotate) cannot load the refused file: it is in no loaded path.
    assert apache.graceful().ok
    if applied:
        assert_applied_behaviour(apache)
    else:
        assert_original_behaviour(apache)


# ------------------------------------------------------------------ failures after the write: rolled back


#: Keeps the contract (a number), rejected by mod_ssl: atoi() wraps it to -1 ("SSLVerifyDepth: Invalid argument").
APACHE_REJECTS = (b"SSLVerifyDepth 10", b"SSLVerifyDepth 4294967295")


def test_an_edit_apache_rejects_is_rolled_back_never_loaded_and_retried(apache: ApacheInstance) -> None:
    assert tool(apache, "apply").code == 0
    good_live = live_bytes(apache)
    edited = apache.policy_path.read_bytes().replace(*APACHE_REJECTS)
    apache.policy_path.write_bytes(edited)
    vhost, gens = apache.vhost_bytes(), generations(apache)

    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (1, "rolled-back"), r
    assert "configtest" in r.doc["message"] and "SSLVerifyDepth" in r.doc["message"], r
    assert "reload" not in r.step_names(), r
    assert apache.policy_path.read_bytes() == edited  # never written back
    assert live_bytes(apache) == good_live and apache.configtest().ok
    assert generations(apache) == gens
    assert_nothing_left_changed(apache, vhost, r, code=1, behaviour="applied")
    assert status_policy(apache).startswith("edited, rejected: ")

    # A retry compares the policy file with what is live (not with a record of the rollback): it tries again.
    again = tool(apache, "apply")
    assert (again.code, again.doc["result"]) == (1, "rolled-back"), again
    assert apache.policy_path.read_bytes() == edited and live_bytes(apache) == good_live
    assert apache.graceful().ok  # someone else's reload: still the policy that passed
    assert_applied_behaviour(apache)


def test_a_good_edit_is_not_blamed_for_someone_elses_broken_file(apache: ApacheInstance) -> None:
    assert tool(apache, "apply").code == 0
    edited = apache.policy_path.read_bytes().replace(b"webkit)/i", b"webkit|edg)/i")
    apache.policy_path.write_bytes(edited)
    broken = apache.enable_conf("zz-unrelated", "ThisIsNotADirective on\n")
    vhost, live = apache.vhost_bytes(), live_bytes(apache)
    try:
        r = tool(apache, "apply")
    finally:
        (apache.confdir / "conf-enabled" / broken.name).unlink()
    assert (r.code, r.doc["result"]) == (2, "refused"), r
    assert "already fails" in r.doc["message"] and "zz-unrelated" in r.stdout + r.stderr, r
    assert apache.policy_path.read_bytes() == edited and live_bytes(apache) == live
    assert_nothing_left_changed(apache, vhost, r, code=2, behaviour="applied")
    # Once the other file is fixed, the same edit goes live.
    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (0, "changed"), r
    assert live_bytes(apache) == live_header(apache, edited) + edited and apache.policy_path.read_bytes() == edited
    assert status_policy(apache).startswith("live")


def test_a_crash_after_writing_the_live_copy_is_recovered_by_the_next_run(apache: ApacheInstance) -> None:
    assert tool(apache, "apply").code == 0
    good_live = live_bytes(apache)
    edited = apache.policy_path.read_bytes().replace(b"webkit)/i", b"webkit|edg)/i")
    apache.policy_path.write_bytes(edited)
    vhost = apache.vhost_bytes()
    r = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": "kill:configtest"})
    assert r.code == -9, r
    assert journal_path(apache).exists() and live_bytes(apache) == live_header(apache, edited) + edited
    s = tool(apache, "status")
    assert s.code == 0, s
    assert not journal_path(apache).exists(), s
    assert live_bytes(apache) == good_live and apache.vhost_bytes() == vhost
    assert apache.policy_path.read_bytes() == edited
    assert s.doc["policy"]["status"] == "edited, not live yet: run apply", s


def test_a_hand_edited_live_copy_is_put_back_as_it_was_by_a_rollback(apache: ApacheInstance) -> None:
    """The rollback puts back the bytes the live copy had before the run, whoever wrote them."""
    assert tool(apache, "apply").code == 0
    edited = apache.policy_path.read_bytes().replace(*APACHE_REJECTS)
    apache.policy_path.write_bytes(edited)
    hand = live_bytes(apache) + b"# an admin's note\n"
    live_path(apache).write_bytes(hand)
    assert "edited by hand" in status_policy(apache)
    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (1, "rolled-back"), r
    assert apache.policy_path.read_bytes() == edited
    assert live_bytes(apache) == hand  # put back as it was, not as we last wrote it
    assert [b for b in backup_files(apache) if b.endswith("cn-sslverify.live.conf")], backup_files(apache)


# ------------------------------------------------------------------ the TLS 1.2 opt-in on every shape


def _shape(name: str, inst_factory: Callable[..., ApacheInstance]) -> ApacheInstance:
    data = (FIXTURES_DIR / "vhosts" / ("cn-ssl.%s.conf" % name)).read_bytes()
    inst = inst_factory("browser-list", vhost=data)
    inst.start()
    return inst


@pytest.mark.parametrize("shape", ["browser-list", "target-reneg"])
def test_tls12_opt_in_on_the_inline_production_shape_by_adopt_and_revert_gives_it_back(
        apache_instance_factory: Callable[..., ApacheInstance], shape: str) -> None:
    inst = _shape(shape, apache_instance_factory)
    inline = inst.vhost_bytes()
    conf = inst.policy_path.read_bytes().replace(*OPT_IN)
    inst.policy_path.write_bytes(conf)
    assert tls13_negotiable(inst)

    r = tool(inst, "apply")
    assert (r.code, r.doc["result"]) == (0, "unchanged"), r
    assert "apply --adopt" in r.stderr, r
    assert inst.vhost_bytes() == inline and tls13_negotiable(inst)

    r = tool(inst, "apply", "--adopt")
    assert (r.code, r.doc["result"]) == (0, "changed"), r
    assert not tls13_negotiable(inst), "the TLS 1.2 opt-in is not in effect"
    # The live check planned for TLS 1.2 and 1.3, found 1.3 refused, and judged the plan for TLS 1.2 alone.
    assert r.doc["gate"]["ok"] and r.doc["gate"]["offered"] == ["1.2"], r.doc["gate"]
    assert r.doc["probe"] and {p["tls_pinned"] for p in r.doc["probe"]} == {"1.2"}, r.doc["probe"]
    assert inst.policy_path.read_bytes() == conf
    new = inst.vhost_bytes()
    assert BEGIN in new and END in new
    assert new.count(b"SSLRenegBufferSize 10000000") == inline.count(b"SSLRenegBufferSize 10000000")
    assert_applied_behaviour_tls12(inst)

    rv = tool(inst, "revert")
    assert (rv.code, rv.doc["result"]) == (0, "changed"), rv
    assert inst.vhost_bytes() == inline
    assert tls13_negotiable(inst)
    assert inst.policy_path.read_bytes() == conf


def assert_applied_behaviour_tls12(inst: ApacheInstance) -> None:
    from transaction_support import CURL_UA, IE11, assert_asked, assert_not_asked
    assert_not_asked(inst, IE11, "1.2")
    assert_asked(inst, CURL_UA, "1.2")


def test_commented_if_else_shape_keeps_its_comments_and_reverts_byte_identical(
        apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = _shape("commented-ifelse", apache_instance_factory)
    original = inst.vhost_bytes()
    r = tool(inst, "apply")
    assert (r.code, r.doc["result"]) == (0, "changed"), r
    new = inst.vhost_bytes()
    for c in (b"\t#<If ", b"\t#</If>\n", b"\t#<Else>\n", b"\t#</Else>\n"):
        assert new.count(c) == original.count(c) == 1, c
    assert_applied_behaviour(inst)
    rv = tool(inst, "revert")
    assert rv.code == 0 and inst.vhost_bytes() == original, rv


# ------------------------------------------------------------------ hosts applied by an older version


def test_a_host_applied_with_the_include_of_the_policy_file_is_moved_to_the_live_copy(apache: ApacheInstance) -> None:
    original = apache.vhost_bytes()
    assert tool(apache, "apply").code == 0
    # What an older version left: the Include names the policy file itself; no live copy.
    legacy = apache.vhost_bytes().replace(str(live_path(apache)).encode(), str(apache.policy_path).encode())
    apache.write_vhost(legacy)
    live_path(apache).unlink()
    assert apache.graceful().ok
    conf = apache.policy_path.read_bytes()

    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (0, "changed"), r
    assert apache.vhost_bytes() == expected_applied(apache, original)
    assert live_bytes(apache) == live_header(apache, conf) + conf and apache.policy_path.read_bytes() == conf
    assert_applied_behaviour(apache)
    rv = tool(apache, "revert")
    assert rv.code == 0 and apache.vhost_bytes() == original, rv
    assert_original_behaviour(apache)
    assert render_placeholders  # the module's helpers stay importable for shape fixtures


def test_a_journal_naming_another_file_as_the_live_copy_is_not_trusted(apache: ApacheInstance) -> None:
    import json
    assert tool(apache, "apply").code == 0
    edited = apache.policy_path.read_bytes().replace(b"webkit)/i", b"webkit|edg)/i")
    apache.policy_path.write_bytes(edited)
    r = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": "kill:configtest"})
    assert r.code == -9, r
    j = json.loads(journal_path(apache).read_text())
    victim = apache.root / "victim.conf"
    victim.write_bytes(live_bytes(apache))  # holds exactly the bytes the journal says we wrote
    rec = [f for f in j["files"] if f["path"] == str(live_path(apache))]
    assert len(rec) == 1, j
    rec[0]["path"] = str(victim)
    journal_path(apache).write_text(json.dumps(j))
    planted = victim.read_bytes()
    s = tool(apache, "apply")
    assert s.code == 3, s
    assert "not acting on it" in s.stderr + s.stdout, s
    assert victim.read_bytes() == planted and apache.policy_path.read_bytes() == edited


def test_a_legacy_host_with_a_refused_policy_file_is_told_that_apache_still_reads_it(apache: ApacheInstance) -> None:
    assert tool(apache, "apply").code == 0
    legacy = apache.vhost_bytes().replace(str(live_path(apache)).encode(), str(apache.policy_path).encode())
    apache.write_vhost(legacy)
    assert apache.graceful().ok
    refused = apache.policy_path.read_bytes().replace(b"webkit)/i", b"webkit|curl)/i")
    apache.policy_path.write_bytes(refused)
    r = tool(apache, "apply")
    assert (r.code, r.doc["result"]) == (2, "refused"), r
    assert "still includes %s itself" % apache.policy_path in r.doc["message"], r
    assert apache.policy_path.read_bytes() == refused and apache.vhost_bytes() == legacy


def test_checks_fix_on_the_inline_production_shape_is_a_command_that_works(
        apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = _shape("browser-list", apache_instance_factory)
    r = tool(inst, "check")
    assert r.code == 5, r
    fix = [h["fix"] for h in r.doc["hazards"] if h["id"] == "tls13-no-pha"]
    assert fix and "uncomment `SSLProtocol -all +TLSv1.2` in %s" % inst.policy_path in fix[0], r
    assert "`dataone-cn-sslverify apply --adopt`" in fix[0], fix
    # Follow it, word for word.
    inst.policy_path.write_bytes(inst.policy_path.read_bytes().replace(*OPT_IN))
    a = tool(inst, "apply", "--adopt")
    assert (a.code, a.doc["result"]) == (0, "changed"), a
    again = tool(inst, "check")
    assert "tls13-no-pha" not in [h["id"] for h in again.doc["hazards"]], again
    assert not tls13_negotiable(inst)
