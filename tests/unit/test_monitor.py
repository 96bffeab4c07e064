"""The monitor's verdict (pure) and its two output formats, parsed by the formats' own rules:
`harness.monitoring`, written from the documentation of each format (its docstring states the rules)."""

import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataone_cn_sslverify import monitor as M
from dataone_cn_sslverify import monitor_live as L
from dataone_cn_sslverify.monitor_observe import broken_at, config_error
from harness.monitoring import parse_checkmk, parse_nagios

def replace(o, **changes):
    return o._replace(**changes)


VHOST = "/etc/apache2/sites-available/cn-ssl.conf"
SNIPPET = "/etc/dataone/apache2/cn-sslverify.conf"
APPLIED = M.Observations(
    vhost_state="applied", vhost_label="applied", vhost_file=VHOST, vhost_where=VHOST + ":11",
    snippet_path=SNIPPET, snippet="live", config_ok=True, browsers_asked=0, browsers_total=20, api_asked=9,
    api_total=9, journal="none",
    replication=(M.Replication("/metacat/servlet/replication", VHOST + ":120", False),),
)
ORIGINAL = replace(APPLIED, vhost_state="original", vhost_label="original:webkit-only", snippet="n/a",
                   browsers_asked=1)
COMMAND = re.compile(r"`[^`]+`")




def both(v: M.Verdict) -> None:
    """The verdict survives both formats intact."""
    status, service, metrics, text = parse_checkmk(M.format_checkmk(v))
    assert status == v.state and service == M.SERVICE
    assert set(metrics) == {m.name for m in v.metrics}
    s, detail, perf = parse_nagios(M.format_nagios(v), v.state)
    assert detail == text and set(perf) == set(metrics)


def judged(o: M.Observations) -> M.Verdict:
    v = M.judge(o)
    both(v)
    if v.state != M.OK:
        for f in v.findings:
            assert COMMAND.search(f.text), f"a non-OK finding without the command that fixes it: {f.text}"
    return v


# ----------------------------------------------------------------------------
# OK


def test_applied_and_live_is_ok_with_counts():
    v = judged(APPLIED)
    assert v.state == M.OK and "policy live" in v.text and "browsers asked on /cn: 0 of 20" in v.text
    assert {m.name: m.value for m in v.metrics} == {"browsers_asked": 0, "api_asked": 9, "replication_open": 0}


def test_superseded_is_ok():
    v = judged(replace(APPLIED, vhost_state="superseded", vhost_label="superseded", snippet="n/a"))
    assert v.state == M.OK and "inline" in v.text


def test_the_administrators_revert_is_ok_and_says_so():
    v = judged(replace(ORIGINAL, optout="disabled by the administrator (alice, 2026-12-01 10:00:00 UTC)"))
    assert v.state == M.OK and v.text.startswith("disabled by the administrator (alice")


def test_tls13_without_the_opt_in_is_the_policys_known_effect_not_a_warning():
    o = replace(APPLIED, hazards=(M.HazardSeen(M.TLS13_HAZARD, "TLS 1.3 is negotiable", "ssl.conf:5", "opt in"),))
    v = judged(o)
    assert v.state == M.OK and "known effect" in v.text


# ----------------------------------------------------------------------------
# WARN


def test_drift_after_a_rewrite_names_apply():
    v = judged(replace(ORIGINAL, applied_before=True))
    assert v.state == M.WARN and v.text.startswith("drift:") and "`dataone-cn-sslverify apply`" in v.text


def test_never_applied_names_apply():
    v = judged(ORIGINAL)
    assert v.state == M.WARN and "not applied" in v.text and "`dataone-cn-sslverify apply`" in v.text


@pytest.mark.parametrize("status,words", [("edited", "edited, not live yet"), ("rejected", "edited, rejected")])
def test_snippet_not_live(status, words):
    v = judged(replace(APPLIED, snippet=status, snippet_detail="why"))
    assert v.state == M.WARN and words in v.text and "`dataone-cn-sslverify apply`" in v.text


def test_snippet_edit_does_not_matter_when_opted_out():
    assert judged(replace(APPLIED, vhost_state="original", optout="disabled by the administrator (x)",
                          snippet="edited")).state == M.OK


def test_tls13_against_the_opt_in_warns():
    o = replace(APPLIED, tls12_only_intended=True,
                hazards=(M.HazardSeen(M.TLS13_HAZARD, "TLS 1.3 is negotiable", "ssl.conf:5: SSLOpenSSLConfCmd", "x"),))
    v = judged(o)
    assert v.state == M.WARN and "TLS 1.3 is negotiable although" in v.text and "ssl.conf:5" in v.text


@pytest.mark.parametrize("hid", ["http2", "reneg-buffer", "browser-pattern"])
def test_check_hazards_warn_with_their_fix(hid):
    h = M.HazardSeen(hid, "title " + hid, "f.conf:3", "do this, then `apache2ctl configtest && apache2ctl graceful`")
    v = judged(replace(APPLIED, hazards=(h,)))
    assert v.state == M.WARN and "title " + hid in v.text and "f.conf:3" in v.text


def test_notes_and_configtest_hazard_are_not_double_reported():
    v = judged(replace(APPLIED, hazards=(M.HazardSeen("configtest", "x", "", "`apache2ctl configtest`"),)))
    assert v.state == M.OK


def test_live_browser_asked_and_api_not_asked_warn():
    live = M.LiveSeen(target="t", browsers_probed=2, browsers_asked=("browser-ie11-win7/1.2/nocert",), api_probed=2,
                      api_not_asked=("api-curl/1.3/nocert",))
    v = judged(replace(APPLIED, live=live))
    assert v.state == M.WARN and len(v.findings) == 2
    assert {m.name: m.value for m in v.metrics}["browsers_asked"] == 1


def test_live_tls13_despite_the_opt_in_warns():
    v = judged(replace(APPLIED, live=M.LiveSeen(target="t", browsers_probed=2, api_probed=2, tls13_despite_optin=True)))
    assert v.state == M.WARN and "TLS 1.3 handshake" in v.text


# ----------------------------------------------------------------------------
# CRIT


def test_broken_configuration_names_file_and_line():
    o = replace(APPLIED, config_ok=False, config_error="AH00526: Syntax error on line 1 of /etc/apache2/conf-enabled/zz.conf: "
                "Invalid command 'Bogus'", config_broken_at="/etc/apache2/conf-enabled/zz.conf:1")
    v = judged(o)
    assert v.state == M.CRIT and "broken by /etc/apache2/conf-enabled/zz.conf:1" in v.text
    assert "`apache2ctl configtest`" in v.text


def test_a_failing_config_test_as_another_user_is_unknown_not_critical():
    o = replace(APPLIED, config_ok=False, config_error="SSLCertificateKeyFile: file '/etc/ssl/private/cn.key' "
                "does not exist or is empty", as_root=False)
    v = judged(o)
    assert v.state == M.UNKNOWN and "`sudo dataone-cn-sslverify monitor`" in v.text


def test_broken_policy_snippet_names_apply():
    v = judged(replace(APPLIED, config_ok=False, config_error="e", config_broken_at=SNIPPET + ":30"))
    assert v.state == M.CRIT and "`dataone-cn-sslverify apply`" in v.text


@pytest.mark.parametrize("by_file,state,command", [
    (SNIPPET, "applied", "dataone-cn-sslverify apply"),
    (VHOST, "original", "dataone-cn-sslverify apply"),
    ("/etc/apache2/conf-enabled/other.conf", "applied", "apache2ctl configtest && apache2ctl graceful"),
])
def test_replication_open_is_critical(by_file, state, command):
    rep = M.Replication("/metacat/servlet/replication", VHOST + ":120", True,
                        f"`SSLVerifyClient none` at {by_file}:9 overrides it", by_file)
    v = judged(replace(APPLIED, vhost_state=state, replication=(rep,), optout="disabled by the administrator (x)"))
    assert v.state == M.CRIT and "accepts a client without a certificate" in v.text and f"`{command}`" in v.text
    assert {m.name: m.value for m in v.metrics}["replication_open"] == 1


def test_live_replication_open_is_critical():
    v = judged(replace(APPLIED, live=M.LiveSeen(target="t", browsers_probed=2, api_probed=2,
                                                replication_open=("/metacat/servlet/replication (200)",))))
    assert v.state == M.CRIT and "(200)" in v.text


@pytest.mark.parametrize("journal", ["pending", "corrupt"])
def test_journal_is_critical(journal):
    v = judged(replace(APPLIED, journal=journal, journal_detail="/var/lib/x/journal.json: apply of f"))
    assert v.state == M.CRIT and "journal" in v.text
    assert ("`dataone-cn-sslverify status`" if journal == "pending" else "`dataone-cn-sslverify discard-journal`") in v.text


# ----------------------------------------------------------------------------
# UNKNOWN and priorities


@pytest.mark.parametrize("change,words", [
    ({"vhost_state": None, "vhost_problem": "no CN SSL vhost found"}, "no CN SSL vhost found"),
    ({"vhost_state": "unrecognised", "vhost_problem": "f:3: split block"}, "split block"),
    ({"busy": "pid 42, apply, since 10:00:00"}, "in progress (pid 42"),
    ({"state_problem": "/var/lib/x: Permission denied"}, "Permission denied"),
    ({"state_dir": "/var/lib/x", "state_untrusted": "owned by uid 1000, mode 0777"},
     "/var/lib/x is not trusted (owned by uid 1000, mode 0777)"),
    ({"journal": "unknown", "journal_detail": "Permission denied"}, "cannot read the journal"),
    ({"live": M.LiveSeen(target="127.0.0.1:443", error="connection refused")}, "cannot reach 127.0.0.1:443"),
])
def test_unknown_says_why(change, words):
    v = judged(replace(APPLIED, **change))
    assert v.state == M.UNKNOWN and words in v.text


def test_crit_beats_unknown_beats_warn_and_all_are_listed():
    o = replace(ORIGINAL, applied_before=True, busy="pid 1", config_ok=False, config_broken_at="a.conf:1")
    v = judged(o)
    assert v.state == M.CRIT and [f.state for f in v.findings] == [M.CRIT, M.UNKNOWN, M.WARN]
    assert "also: [UNKNOWN]" in v.text and "[WARNING] drift" in v.text
    assert judged(replace(o, config_ok=True)).state == M.UNKNOWN
    assert M.worst([M.OK, M.WARN, M.UNKNOWN]) == M.UNKNOWN and M.worst([]) == M.OK


def test_text_cannot_break_either_format():
    bad = "/cn/(windows|chrome)\n2 fake-service - injected\x1b[31m"
    v = judged(replace(APPLIED, snippet="edited", snippet_detail=bad))
    line = M.format_checkmk(v)
    assert line.count("\n") == 1 and "\x1b" not in line and "|" not in line.split(" ", 3)[3]


@settings(max_examples=200, deadline=None)
@given(
    state=st.sampled_from([None, "applied", "superseded", "original", "unrecognised"]),
    optout=st.sampled_from([None, "disabled by the administrator (x)"]),
    snippet=st.sampled_from(["live", "edited", "rejected", "unknown", "n/a"]),
    config_ok=st.sampled_from([None, True, False]),
    journal=st.sampled_from(["none", "pending", "corrupt", "unknown"]),
    busy=st.sampled_from(["", "pid 3"]),
    applied_before=st.booleans(),
    hazard=st.sampled_from(["", M.TLS13_HAZARD, "http2", "reneg-buffer", "browser-pattern", "tls13-disabled"]),
    intended=st.booleans(),
    rep_open=st.booleans(),
    as_root=st.booleans(),
    detail=st.text(max_size=30),
)
def test_every_combination_gives_one_parseable_verdict(state, optout, snippet, config_ok, journal, busy,
                                                       applied_before, hazard, intended, rep_open, as_root, detail):
    o = replace(APPLIED, vhost_state=state, optout=optout, snippet=snippet, snippet_detail=detail,
                config_ok=config_ok, journal=journal, journal_detail=detail, busy=busy,
                applied_before=applied_before, tls12_only_intended=intended, as_root=as_root,
                hazards=(M.HazardSeen(hazard, "t", detail, "`x`"),) if hazard else (),
                replication=(M.Replication("/r", "f:1", rep_open, "by", "f"),))
    v = judged(o)
    if journal in ("pending", "corrupt") or (config_ok is False and as_root) or rep_open:
        assert v.state == M.CRIT
    elif v.state == M.OK:
        assert state in ("applied", "superseded") or (state == "original" and optout)


# ----------------------------------------------------------------------------
# Apache's error, and the --live cache


def test_broken_at_names_the_innermost_file():
    err = ("apache2: Syntax error on line 146 of /etc/apache2/apache2.conf: Syntax error on line 1 of "
           "/etc/apache2/mods-enabled/qos.load: Cannot load mod_qos.so")
    assert broken_at(err) == "/etc/apache2/mods-enabled/qos.load:1"
    assert broken_at("AH00526: Syntax error on line 7 of /etc/apache2/conf-enabled/zz.conf: Invalid command") == \
        "/etc/apache2/conf-enabled/zz.conf:7"
    assert broken_at("no file named") == ""


def test_config_error_skips_the_files_the_dump_listed_before_the_failure():
    out = ("Included configuration files:\n  (1) /etc/apache2/apache2.conf\n"
           "    (222) /etc/apache2/conf-enabled/localized-error-pages.conf\n"
           "AH00526: Syntax error on line 2 of /etc/apache2/conf-enabled/zz-local.conf:\n"
           "Invalid command 'BogusDirective', perhaps misspelled\nAction '-t -D DUMP_INCLUDES' failed.\n")
    err = config_error(out)
    assert err.startswith("AH00526: Syntax error on line 2") and "Invalid command 'BogusDirective'" in err
    assert broken_at(err) == "/etc/apache2/conf-enabled/zz-local.conf:2"


SEEN = M.LiveSeen(target="127.0.0.1:443 (SNI cn)", browsers_probed=2, api_probed=2)


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return str(d)


def test_cache_round_trip_and_expiry(state_dir):
    assert L.write_cache(state_dir, SEEN, "k", now=1000.0)
    got = L.read_cache(state_dir, "k", ttl=300, now=1100.0)
    assert got is not None and got.age == 100.0 and got.browsers_probed == 2
    assert L.read_cache(state_dir, "k", ttl=300, now=1301.0) is None, "expired"
    assert L.read_cache(state_dir, "other", ttl=300, now=1100.0) is None, "another configuration"
    assert L.read_cache(state_dir, "k", ttl=300, now=900.0) is None, "from the future"
    assert L.read_cache(state_dir, "k", ttl=0, now=1100.0) is None, "caching off"
    assert [n for n in os.listdir(state_dir) if n != L.CACHE_NAME] == [], "a temp file was left"


def test_cache_is_never_trusted(state_dir, tmp_path):
    path = os.path.join(state_dir, L.CACHE_NAME)
    L.write_cache(state_dir, SEEN, "k", now=1000.0)
    good = open(path).read()
    for bad in ("{", "[]", good.replace('"browsers_probed": 2', '"browsers_probed": "2"'),
                good.replace('"version": 1', '"version": 2'), good.replace('"measured": 1000.0', '"measured": true')):
        with open(path, "w") as f:
            f.write(bad)
        assert L.read_cache(state_dir, "k", ttl=300, now=1100.0) is None, bad
    with open(path, "w") as f:
        f.write(good)
    os.chmod(path, 0o666)
    assert L.read_cache(state_dir, "k", ttl=300, now=1100.0) is None, "writable by others"
    os.chmod(path, 0o600)
    os.link(path, str(tmp_path / "hardlink"))
    assert L.read_cache(state_dir, "k", ttl=300, now=1100.0) is None, "a hard link elsewhere"


def test_cache_never_follows_a_planted_link(state_dir, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(str(victim), os.path.join(state_dir, L.CACHE_NAME))
    assert L.read_cache(state_dir, "k", ttl=300) is None
    assert L.write_cache(state_dir, SEEN, "k")
    assert victim.read_text() == "precious\n", "the write followed the planted link"
    assert not os.path.islink(os.path.join(state_dir, L.CACHE_NAME))
    doc = json.loads(open(os.path.join(state_dir, L.CACHE_NAME)).read())
    assert doc["key"] == "k"


def test_cache_is_not_written_in_a_directory_others_may_write(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(str(d), 0o777)
    assert not L.write_cache(str(d), SEEN, "k")
    assert os.listdir(str(d)) == []


def test_config_cache_key_follows_every_loaded_file(tmp_path, monkeypatch):
    import time

    from dataone_cn_sslverify import policy
    from dataone_cn_sslverify.monitor_observe import config_key

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 60)  # judged a minute later: no file is racy

    files = [tmp_path / n for n in ("apache2.conf", "cn-ssl.conf", "snippet.conf")]
    for f in files:
        f.write_text("# x\n")
    dump = "Included configuration files:\n" + "".join(f"  ({i}) {f}\n" for i, f in enumerate(files, 1))
    a = policy.Assessment(str(files[1]), 3, "cn", ["*:443"], "applied")
    k = config_key(dump, a, str(files[2]))
    assert k and k == config_key(dump, a, str(files[2]))
    for f in files:
        before = f.read_text()
        f.write_text(before + "# edited\n")
        assert config_key(dump, a, str(files[2])) != k, f
        f.write_text(before)
        os.utime(str(f), ns=(1, 1))
        assert config_key(dump, a, str(files[2])) != k, "same bytes, other times: analysed again"
    assert config_key("no file listed", a, str(files[2])) is None
    files[0].unlink()
    assert config_key(dump, a, str(files[2])) is None


def test_config_cache_fields_are_checked(state_dir):
    from dataone_cn_sslverify import monitor_cache
    from dataone_cn_sslverify.monitor_observe import CONFIG_CACHE, CONFIG_VERSION, _cached_fields

    good = {"hazards": [["http2", "t", "w", "f"]], "replication": [["/r", "f:1", True, "by", "f"]],
            "tls12_only_intended": False, "browsers_asked": 0, "browsers_total": 20, "api_asked": 8, "api_total": 8}
    assert monitor_cache.write_doc(state_dir, CONFIG_CACHE, {"version": CONFIG_VERSION, "key": "k", "fields": good})
    got = _cached_fields(monitor_cache.read_doc(state_dir, CONFIG_CACHE, CONFIG_VERSION, "k"))
    assert got is not None and got["replication"][0].open is True and got["hazards"][0].id == "http2"
    assert monitor_cache.read_doc(state_dir, CONFIG_CACHE, CONFIG_VERSION, "other") is None
    for bad in ({"browsers_asked": -1}, {"browsers_asked": True}, {"tls12_only_intended": 1},
                {"hazards": [["http2", "t", "w"]]}, {"replication": [["/r", "f:1", "yes", "by", "f"]]},
                {"hazards": "http2"}):
        assert _cached_fields({"fields": dict(good, **bad)}) is None, bad
    assert _cached_fields(None) is None and _cached_fields({"fields": []}) is None


def test_bad_plugin_arguments_are_unknown_not_critical(capsys):
    from dataone_cn_sslverify import cli

    assert cli.main(["monitor", "--format", "xml"]) == 3
    assert capsys.readouterr().out.startswith("UNKNOWN - invalid arguments")
    assert cli.main(["monitor", "--help"]) == 0


@pytest.mark.parametrize("line,expected", [
    ("live (Apache loads what the policy file says)", ("live", "")),
    ("edited, not live yet: run apply", ("edited", "")),
    ("edited, rejected: f.conf:3: <Location> touches replication", ("rejected", "f.conf:3: <Location> touches replication")),
    ("not live; rejected: f.conf:1: bad", ("rejected", "f.conf:1: bad")),
    ("the live copy was edited by hand (not written by dataone-cn-sslverify): run apply",
     ("edited", "the live copy was edited by hand (not written by dataone-cn-sslverify): run apply")),
])
def test_the_live_copy_status_line_maps_to_the_verdict(line, expected):
    from dataone_cn_sslverify.monitor_observe import snippet_status_of

    assert snippet_status_of(line) == expected
    status, detail = expected
    v = judged(replace(APPLIED, snippet=status, snippet_detail=detail))
    assert v.state == (M.OK if status == "live" else M.WARN)


def test_the_journal_is_read_without_trust(state_dir, tmp_path):
    from dataone_cn_sslverify.monitor_observe import journal_state, read_state
    from dataone_cn_sslverify.store import Store

    store = Store(state_dir)
    assert journal_state(store) == ("none", "")
    vhost = "/etc/apache2/sites-available/cn-ssl.conf"
    with open(store.journal_path, "w") as f:  # as the undo path writes it (reverter, version 2)
        json.dump({"version": 2, "op": "apply", "pid": 1, "started": 1.0, "running_before": True, "step": "written",
                   "target": None, "files": [{"path": vhost, "sha256_before": "a" * 64, "sha256_written": "b" * 64,
                                              "backup": "/var/lib/dataone-cn-sslverify/backups/X"}]}, f)
    state, detail = journal_state(store)
    assert state == "pending" and detail.endswith("apply of " + vhost), detail
    for bad in ("{", "[]", '{"file": 3}', "\xff", '{"op": "apply", "pid": 1, "files": [{"path": "rel"}]}'):
        with open(store.journal_path, "w", encoding="latin-1") as f:
            f.write(bad)
        assert journal_state(store)[0] == "corrupt", bad
    os.unlink(store.journal_path)
    secret = tmp_path / "elsewhere.json"
    secret.write_text('{"op": "apply", "pid": 1, "files": []}')
    os.symlink(str(secret), store.journal_path)
    assert journal_state(store)[0] == "corrupt", "a planted link is not a journal"
    assert read_state(str(tmp_path / "missing"), "/v", "/s", applied=True) == {}, "no state dir: nothing recorded"
    assert not os.path.exists(str(tmp_path / "missing")), "monitor must not create the state dir"


def test_a_state_dir_others_may_write_is_not_read(tmp_path):
    from dataone_cn_sslverify.monitor_observe import read_state

    d = tmp_path / "state"
    d.mkdir()
    (d / "journal.json").write_text('{"op": "apply", "pid": 1, "files": []}')
    os.chmod(str(d), 0o777)
    got = read_state(str(d), "/v", "/s", applied=True)
    assert got == {"state_untrusted": "owned by uid %d, mode 0777" % os.geteuid()}, got
    os.chmod(str(d), 0o700)
    assert read_state(str(d), "/v", "/s", applied=True)["journal"] == "pending"
