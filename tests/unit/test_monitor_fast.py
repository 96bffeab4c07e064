"""`monitor_fast`: the verdict cache's key, its file format and strict parser, the options it answers.

The fast path against a real Apache is tests/integration/test_monitor_fast_apache.py.
"""

import os
import stat
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataone_cn_sslverify import cliargs, monitor_cache, monitor_fast, monitor_observe, paths
from dataone_cn_sslverify.monitor_fast import FILE, DIR, Consulted, netstrings, parse, serialise


def valid_doc(state: int = 0) -> bytes:
    c = Consulted()
    c.add(FILE, "/nonexistent/a.conf")
    c.add(DIR, "/")
    return serialise(monitor_fast.current_context(None), "/usr/sbin/apache2ctl", "Included configuration files:\n",
                     c.paths_section(), state, "OK - fine\n", "0 svc - fine\n", '{\n  "state": 0\n}\n')


def test_a_saved_document_parses_back_to_what_was_saved() -> None:
    doc = parse(valid_doc(1))
    assert doc is not None
    assert doc.context == monitor_fast.current_context(None) and doc.ctl == "/usr/sbin/apache2ctl"
    assert doc.dump == "Included configuration files:\n" and doc.state == 1
    assert doc.outputs == {"nagios": "OK - fine\n", "checkmk": "0 svc - fine\n", "json": '{\n  "state": 0\n}\n'}
    kinds = {p: k for k, p, _ in doc.paths}
    assert kinds["/nonexistent/a.conf"] == FILE and kinds["/"] == DIR
    assert dict((p, t) for _, p, t in doc.paths)["/nonexistent/a.conf"] == "absent"


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1],  # truncated
    lambda b: b + b"x",  # trailing bytes
    lambda b: b.replace(monitor_fast.MAGIC, b"other magic\n"),
    lambda b: b.replace(b"1:0,", b"1:3,"),  # UNKNOWN is never saved: a file claiming it is not ours
    lambda b: b.replace(b"1:0,", b"01:0,", 1),  # a length with a leading zero
    lambda b: b.replace(b"1:f,", b"1:x,", 1),  # an unknown kind of path
    lambda b: b.replace(b"/nonexistent/a.conf", b"nonexistent/a.confx", 1),  # a relative path
    lambda b: b.replace(b"OK - fine", b"OK - \xff\xfe\xfd", 1),  # not UTF-8
    lambda b: b"",
])
def test_anything_but_what_serialise_writes_is_a_miss(mangle) -> None:
    data = valid_doc(0)
    assert parse(data) is not None
    assert parse(mangle(data)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_is_a_miss_never_an_exception(data: bytes) -> None:
    assert parse(data) is None
    got = parse(monitor_fast.MAGIC + data)
    assert got is None or got.state in (0, 1, 2)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_a_valid_file_with_bytes_changed_parses_or_misses_without_raising(at: int, junk: bytes) -> None:
    data = valid_doc(2)
    i = at % len(data)
    got = parse(data[:i] + junk + data[i + len(junk):])
    assert got is None or isinstance(got.state, int)


@given(st.lists(st.binary(max_size=20), max_size=6))
def test_netstrings_round_trip(items) -> None:
    assert netstrings(b"".join(monitor_fast.netstring(x) for x in items)) == items


_DUMP_LINES = st.sampled_from([
    "Included configuration files:", "  (*) /etc/apache2/apache2.conf", "    (69) /etc/apache2/mods-enabled/ssl.load",
    "  (12) /etc/apache2/sites-enabled/cn ssl.conf  ", "\t(3)\t/x.conf", " (*)/no-space.conf", "(x) /not-a-file",
    "[Wed Dec 02 01:04:46.97 2026] [so:warn] [pid 24756:tid 24756] AH01574: module ssl_module is already loaded",
    "AH00558: apache2: Could not reliably determine the server's fully qualified domain name", "Syntax OK", "",
    "\u2003(7) /em-space.conf", "  (1) /a.conf\r"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_DUMP_LINES, max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_the_dump_key_keeps_every_file_line_the_full_path_reads(lines, eol) -> None:
    from dataone_cn_sslverify import apachectl

    out = eol.join(lines) + eol
    key = monitor_fast.dump_key(out)
    assert apachectl.parse_dump_includes(key) == apachectl.parse_dump_includes(out)
    assert "[pid" not in key and "Included configuration files" not in key


def test_the_dump_key_ignores_a_warning_with_a_pid_but_not_a_file() -> None:
    a = "Included configuration files:\n  (*) /etc/apache2/apache2.conf\n"
    warned = "[Wed Dec 02 01:04:46 2026] [so:warn] [pid 1:tid 1] AH01574: module ssl_module is already loaded\n" + a
    assert monitor_fast.dump_key(warned) == monitor_fast.dump_key(a)
    assert monitor_fast.dump_key(a + "  (12) /etc/apache2/conf-enabled/new.conf\n") != monitor_fast.dump_key(a)


def test_the_context_tells_every_input_apart() -> None:
    env = {"PATH": "/usr/bin", "APACHE_CONFDIR": "/etc/apache2"}
    base = monitor_fast.context(None, env, 0, 0, [0])
    others = [
        monitor_fast.context("", env, 0, 0, [0]),  # --vhost "" is not "no --vhost"
        monitor_fast.context("/v", env, 0, 0, [0]),
        monitor_fast.context(None, env, 1000, 0, [0]),
        monitor_fast.context(None, env, 0, 4, [0]),
        monitor_fast.context(None, env, 0, 0, [0, 4]),
        monitor_fast.context(None, dict(env, APACHE_CONFDIR=""), 0, 0, [0]),  # empty is not unset
        monitor_fast.context(None, {"PATH": "/usr/bin"}, 0, 0, [0]),
        monitor_fast.context(None, dict(env, DATAONE_CN_SSLVERIFY_STATE_DIR="/s"), 0, 0, [0]),
        monitor_fast.context(None, dict(env, APACHE_ARGUMENTS="-DX"), 0, 0, [0]),
    ]
    assert len(set(others + [base])) == len(others) + 1
    assert monitor_fast.context(None, dict(env, HOME="/root", TERM="xterm", PATH="/sbin:/bin"), 0, 0, [0]) == base, \
        "what the verdict does not depend on is not in the key (PATH counts through the apache2ctl it finds)"


def test_the_fast_path_shares_the_full_paths_constants() -> None:
    from dataone_cn_sslverify.store import Store

    assert monitor_fast.DEFAULT_STATE_DIR == paths.DEFAULT_STATE_DIR
    assert Store("/s").lock_path == os.path.join("/s", "lock"), "the lock the fast path takes shared"
    assert set(monitor_observe._ENV_KEYS) <= set(monitor_fast.ENV_KEYS)
    assert {"DATAONE_CN_SSLVERIFY_POLICY", "DATAONE_CN_SSLVERIFY_LIVE", "DATAONE_CN_SSLVERIFY_STATE_DIR"} <= set(
        monitor_fast.ENV_KEYS)


def test_a_token_changes_with_the_file_and_says_absent(tmp_path) -> None:
    f = tmp_path / "f.conf"
    assert monitor_fast.probe(FILE, str(f))[0] == "absent"
    f.write_bytes(b"a")
    t1, stamps = monitor_fast.probe(FILE, str(f))
    assert t1 != "absent" and len(stamps) == 1
    f.write_bytes(b"b")  # same size: the ctime (and mtime) moved, or the same tick: `racy` covers it
    os.utime(str(f), ns=(stamps[0][0], stamps[0][0]))
    t2 = monitor_fast.probe(FILE, str(f))[0]
    assert t2 != t1 or monitor_fast.racy(stamps, time.time())
    os.chmod(str(f), 0o600)
    assert monitor_fast.probe(FILE, str(f))[0] != t2
    link = tmp_path / "l.conf"
    link.symlink_to(f)
    tl = monitor_fast.probe(FILE, str(link))[0]
    assert " > " in tl and tl.endswith(monitor_fast.probe(FILE, str(f))[0])
    link.unlink()
    link.symlink_to(tmp_path / "gone")
    assert monitor_fast.probe(FILE, str(link))[0].endswith(" > absent")


def test_a_directory_is_recorded_without_its_times(tmp_path) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    before = monitor_fast.probe(DIR, str(d))
    (d / "new").write_bytes(b"")  # a new name changes the dir's mtime: the cache's own rename does too
    assert monitor_fast.probe(DIR, str(d)) == before and before[1] == []
    os.chmod(str(d), 0o770)
    assert monitor_fast.probe(DIR, str(d))[0] != before[0], "its mode is in the key (the trust checks read it)"


def test_racy_a_change_within_two_seconds_of_the_run_is_racy() -> None:
    now = time.time()
    ns = int(now * 1e9)
    old = ns - 10 * 10 ** 9
    assert not monitor_fast.racy([(old, old)], now)
    assert monitor_fast.racy([(old, ns - 10 ** 9)], now), "ctime 1 s before the run"
    assert monitor_fast.racy([(ns - 10 ** 9, old)], now), "mtime 1 s before the run"
    assert not monitor_fast.racy([(ns + 3600 * 10 ** 9, old)], now), "a future mtime is not a change (ctime says)"


def test_consulted_settles_only_when_nothing_changed_and_nothing_is_racy(tmp_path) -> None:
    f = tmp_path / "a.conf"
    f.write_bytes(b"x")
    later = time.time() + 60  # as if the run started a minute after the file was written
    c = Consulted(started=later)
    c.add(FILE, str(f))
    c.add(FILE, str(tmp_path / "absent.json"))
    assert c.settled()
    (tmp_path / "absent.json").write_bytes(b"{}")
    assert not c.settled(), "a file that appeared"
    c = Consulted(started=later)
    c.add(FILE, str(f))
    f.write_bytes(b"yy")
    assert not c.settled(), "a file that changed during the run"
    c = Consulted()  # a run starting now: f was written less than RACY seconds ago
    c.add(FILE, str(f))
    assert not c.settled()


# The options: what the fast path answers must be exactly what argparse would make of the same line.

_TOKENS = ["monitor", "--format", "nagios", "checkmk", "--format=checkmk", "--json", "--verbose", "-v", "--vhost",
           "/etc/apache2/sites-available/cn-ssl.conf", "--vhost=/v", "--live", "--cache", "0", "--", "-h", "--form",
           "status", "rel.conf", "--vhost="]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=6))
def test_options_accepts_only_what_argparse_reads_the_same_way(argv) -> None:
    got = monitor_fast.options(argv)
    if got is None:
        return
    try:
        ns = cliargs.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail("the fast path accepted %r, argparse refuses it" % (argv,))
    assert ns.command == "monitor" and not ns.live
    assert got == (ns.format, ns.json, ns.vhost), argv


@pytest.mark.parametrize("argv,want", [
    (["monitor"], ("nagios", False, None)),
    (["monitor", "--format", "checkmk"], ("checkmk", False, None)),
    (["--json", "monitor", "--format=nagios", "-v"], ("nagios", True, None)),
    (["--vhost", "/v.conf", "monitor", "--json"], ("nagios", True, "/v.conf")),
    (["monitor", "--live"], None),
    (["monitor", "--format", "checkmk", "--format", "nagios"], None),
    (["--format", "checkmk", "monitor"], None),  # not a global option: argparse refuses it
    (["monitor", "--vhost", "rel.conf"], None),  # relative: would depend on the working directory
    (["monitor", "--help"], None),
    (["status"], None),
    (["monitor", "--form", "checkmk"], None),
])
def test_options(argv, want) -> None:
    assert monitor_fast.options(argv) == want


def test_absolute_inputs() -> None:
    assert monitor_fast.absolute_inputs({"PATH": ".:/usr/bin", "APACHE_CONFDIR": "/etc/apache2"})
    assert not monitor_fast.absolute_inputs({"APACHE_CONFDIR": "etc/apache2"})
    assert not monitor_fast.absolute_inputs({"DATAONE_CN_SSLVERIFY_STATE_DIR": "state"})


# The cache file on disk: read with monitor_cache's distrust.

def _state(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


def test_read_private_refuses_what_is_not_ours_alone(tmp_path) -> None:
    d = _state(tmp_path)
    name = monitor_fast.NAME
    assert monitor_cache.write_private(str(d), name, b"data", monitor_fast.MAX_BYTES)
    p = d / name
    assert stat.S_IMODE(os.lstat(str(p)).st_mode) == 0o600
    assert monitor_cache.read_private(str(d), name) == b"data"
    os.chmod(str(p), 0o620)
    assert monitor_cache.read_private(str(d), name) is None, "group-writable"
    os.chmod(str(p), 0o600)
    os.link(str(p), str(d / "hard"))
    assert monitor_cache.read_private(str(d), name) is None, "two links"
    os.unlink(str(d / "hard"))
    if os.geteuid() == 0:
        os.chown(str(p), 65534, 65534)
        assert monitor_cache.read_private(str(d), name) is None, "owned by someone else"
        os.chown(str(p), 0, 0)
    os.rename(str(p), str(d / "target"))
    os.symlink("target", str(p))
    assert monitor_cache.read_private(str(d), name) is None, "a symlink"
    os.unlink(str(p))
    p.write_bytes(b"x" * 10)
    assert monitor_cache.read_private(str(d), name, max_bytes=9) is None, "too big"
    os.chmod(str(d), 0o770)
    assert monitor_cache.read_private(str(d), name) is None, "a state dir others may write in"


def test_save_refuses_without_a_clean_dump_or_with_racy_files(tmp_path, monkeypatch) -> None:
    d = _state(tmp_path)
    f = tmp_path / "a.conf"
    f.write_bytes(b"x")
    monkeypatch.setenv("DATAONE_CN_SSLVERIFY_STATE_DIR", str(d))
    c = Consulted(started=time.time() + 60)
    c.add(FILE, str(f))
    args = (str(d), None, 0, "OK - x\n", "0 s - x\n", "{}\n")
    assert not monitor_fast.save(c, *args), "no dump seen: nothing is saved"
    c.saw_dump("/usr/sbin/apache2ctl", "Included configuration files:\n  (*) %s\n" % f)
    assert not monitor_fast.save(c, str(d), None, 3, "UNKNOWN - x\n", "3 s - x\n", "{}\n"), "UNKNOWN"
    assert monitor_fast.save(c, *args)
    doc = parse((d / monitor_fast.NAME).read_bytes())
    assert doc is not None and doc.outputs["nagios"] == "OK - x\n" and doc.context == monitor_fast.current_context(None)
    (d / monitor_fast.NAME).unlink()
    c = Consulted()
    c.add(FILE, str(f))
    c.saw_dump("/usr/sbin/apache2ctl", "")
    assert not monitor_fast.save(c, *args), "a file changed less than RACY seconds ago"
    assert not (d / monitor_fast.NAME).exists()


def test_config_cache_key_is_none_while_a_loaded_file_is_racy(tmp_path, monkeypatch) -> None:
    conf = tmp_path / "apache2.conf"
    conf.write_bytes(b"ServerRoot /x\n")
    snippet = tmp_path / "snippet.conf"
    snippet.write_bytes(b"# policy\n")
    dump = "Included configuration files:\n  (*) %s\n" % conf
    a = SimpleNamespace(filename=str(conf), line=1)
    assert monitor_observe.config_key(dump, a, str(snippet)) is None, "written just now: racy"
    real = time.time
    monkeypatch.setattr(monitor_observe.time, "time", lambda: real() + 60)
    assert monitor_observe.config_key(dump, a, str(snippet)) is not None, "the same files a minute later"
