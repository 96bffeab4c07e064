"""`status` and `diff` as an operator runs them, against a real Apache 2.4.

The command runs as a real subprocess (``python3 -m dataone_cn_sslverify``)
with the instance's environment (``APACHE_CONFDIR``/``APACHE_ENVVARS``), so
what Apache itself loads (``apache2ctl -t -D DUMP_INCLUDES``) decides which
vhost is found.  Diffs are applied with GNU ``patch`` and the result is
config-tested by the real Apache; expectations about the block are derived
from the fixture text here, not from the package's own modules.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from harness import ApacheInstance, render_fixture
from harness.instance import USER_AGENTS, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # Debian's 3.11 under `make test`, 3.6 under `make test-py36`
PATCH = "/usr/bin/patch"
ORIGINALS = ("plain-optional", "webkit-if-else", "webkit-only")
ALL_VARIANTS = ORIGINALS + ("browser-list",)

# docs/design.md, "The change on disk": the three managed lines.
BEGIN = "# dataone-cn-sslverify: begin (managed; `dataone-cn-sslverify revert` restores the original)"
END = "# dataone-cn-sslverify: end"

# Parts of the production vhost outside the block that must never move (docs/facts.md).
REPLICATION = b"\t<Location /metacat/servlet/replication>\n\t\tSSLVerifyClient require\n\t\tSSLVerifyDepth  10\n\t</Location>\n"
COOKIE_IF = (b'\t<If "%{HTTP_USER_AGENT} !~ /(iPhone OS 12_|iPad; CPU OS 12_|Intel Mac OS X 10_14_.*Version.*Safari)/i">\n'
             b'\t\tHeader edit Set-Cookie ^(.*)$ "$1; SameSite=None; Secure"\n\t</If>\n')
RENEG_BUFFER = b"\t<Location /cn>\n\t\tSSLRenegBufferSize 10000000\n\t</Location>\n"
UNTOUCHED = (REPLICATION, COOKIE_IF, RENEG_BUFFER)


# ----------------------------------------------------------------------------- helpers


class Run:
    """One finished run of the command (bytes decoded as latin-1: CRs kept)."""

    def __init__(self, argv: List[str], proc: "subprocess.CompletedProcess[bytes]") -> None:
        self.argv = argv
        self.rc = proc.returncode
        self.out = proc.stdout.decode("latin-1")
        self.err = proc.stderr.decode("latin-1")

    def json(self) -> Dict[str, Any]:
        return json.loads(self.out)

    def __str__(self) -> str:
        return "%s -> rc=%s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (" ".join(self.argv), self.rc, self.out, self.err)


def tool(inst: ApacheInstance, *args: str, vhost: Optional[str] = None, as_json: bool = False) -> Run:
    argv = [PYTHON, "-m", "dataone_cn_sslverify"]
    if as_json:
        argv.append("--json")
    if vhost is not None:
        argv += ["--vhost", vhost]
    argv += list(args)
    proc = subprocess.run(argv, env=inst.env(), cwd=str(REPO), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    return Run(argv, proc)


def lines_of(data: bytes) -> List[str]:
    return data.decode("latin-1").splitlines(keepends=True)


def block_range(data: bytes) -> Tuple[int, int]:
    """0-based [first, last] line indexes of the client-verification block of a fixture-shaped vhost.

    It starts right after the comment that ends "... verified up to a depth of 10." + "#"
    and ends at the vhost-level SSLVerifyDepth line (any case, any indentation).
    """
    ls = lines_of(data)
    first = next(i for i, ln in enumerate(ls) if "verified up to a depth of 10." in ln) + 2
    assert ls[first - 1].strip() == "#", ls[first - 1]
    last = next(i for i in range(first, len(ls)) if ls[i].strip().lower().startswith("sslverifydepth"))
    return first, last


def vhost_line(data: bytes) -> int:
    """1-based line of the SSL <VirtualHost> (the first one in the fixture)."""
    return next(i for i, ln in enumerate(lines_of(data), 1) if ln.lstrip().lower().startswith("<virtualhost"))


def parse_diff(diff: str) -> Tuple[List[str], List[str]]:
    """(removed, added) lines of a unified diff, line endings kept."""
    removed: List[str] = []
    added: List[str] = []
    in_hunk = False
    for ln in diff.splitlines(keepends=True):
        if ln.startswith("@@"):
            in_hunk = True
        elif not in_hunk or ln.startswith("\\"):
            continue
        elif ln.startswith("-"):
            removed.append(ln[1:])
        elif ln.startswith("+"):
            added.append(ln[1:])
    return removed, added


def managed_lines(indent: str, eol: str, policy: Path) -> List[str]:
    return [indent + BEGIN + eol, indent + "Include %s" % policy + eol, indent + END + eol]


def live_of(inst: ApacheInstance) -> Path:
    """The policy's live copy, the file the managed Include names (next to the policy file)."""
    return inst.policy_path.parent / "cn-sslverify.live.conf"


def make_live(inst: ApacheInstance) -> None:
    """What apply writes besides the vhost: the live copy (here a plain copy of the policy file)."""
    if not live_of(inst).exists():
        live_of(inst).write_bytes(inst.policy_path.read_bytes())


def apply_with_patch(original: bytes, diff: str, work: Path) -> bytes:
    """Apply ``diff`` with GNU patch to a copy of ``original``; the patched bytes."""
    work.mkdir(parents=True, exist_ok=True)
    src, out, pf = work / "copy.conf", work / "patched.conf", work / "change.diff"
    src.write_bytes(original)
    pf.write_bytes(diff.encode("latin-1"))
    p = subprocess.run([PATCH, "--no-backup-if-mismatch", "-o", str(out), str(src), "-i", str(pf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert p.returncode == 0, "patch failed:\n%s\n--- diff ---\n%s" % (p.stdout.decode(errors="replace"), diff)
    assert src.read_bytes() == original
    return out.read_bytes()


def snapshot(inst: ApacheInstance) -> Dict[str, Any]:
    """What a read-only command must not change: vhost bytes and mtime, site dirs, state dir."""
    st = os.stat(str(inst.vhost_path))
    return {
        "bytes": inst.vhost_bytes(),
        "mtime": st.st_mtime_ns,
        "available": sorted(os.listdir(str(inst.confdir / "sites-available"))),
        "enabled": sorted(os.listdir(str(inst.confdir / "sites-enabled"))),
        "state": sorted(os.listdir(str(inst.state_dir))) if inst.state_dir.exists() else None,
    }


def assert_unchanged(inst: ApacheInstance, before: Dict[str, Any]) -> None:
    after = snapshot(inst)
    assert after["bytes"] == before["bytes"], "vhost bytes changed"
    assert after["mtime"] == before["mtime"], "vhost mtime changed"
    assert after["available"] == before["available"] and after["enabled"] == before["enabled"]
    assert after["state"] in (None, []), "state dir written: %s" % after["state"]


def swap_in_configtest(inst: ApacheInstance, patched: bytes) -> Tuple[bool, str]:
    """Put ``patched`` in place of the vhost, config-test, put the original back."""
    saved = inst.vhost_bytes()
    make_live(inst)
    try:
        inst.write_vhost(patched)
        r = inst.configtest()
        return r.ok, r.output
    finally:
        inst.write_vhost(saved)


def real(inst: ApacheInstance) -> str:
    return str(inst.vhost_path)


def enable_site(inst: ApacheInstance, name: str, data: bytes) -> Path:
    """Write sites-available/NAME.conf and enable it like a2ensite (relative symlink)."""
    path = inst.confdir / "sites-available" / (name + ".conf")
    path.write_bytes(data)
    os.symlink("../sites-available/%s.conf" % name, str(inst.confdir / "sites-enabled" / (name + ".conf")))
    return path


def replace_block(data: bytes, new_block: bytes) -> bytes:
    first, last = block_range(data)
    ls = lines_of(data)
    return ("".join(ls[:first])).encode("latin-1") + new_block + ("".join(ls[last + 1:])).encode("latin-1")


# ----------------------------------------------------------------------------- 1. status


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_status_reports_the_real_file_and_state_of_each_variant(
        apache_instance_factory: Callable[..., ApacheInstance], variant: str) -> None:
    inst = apache_instance_factory(variant)
    inst.start()
    data = inst.vhost_bytes()
    r = tool(inst, "status", as_json=True)
    assert r.rc == 0, r
    doc = r.json()
    assert len(doc["vhosts"]) == 1, doc  # the :80 redirect vhost is not an SSL vhost
    vh = doc["vhosts"][0]
    assert vh["file"] == real(inst), "must be the real file, not the sites-enabled symlink: %s" % vh
    assert os.path.islink(str(inst.vhost_link)) and vh["file"] != str(inst.vhost_link)
    assert vh["line"] == vhost_line(data) == 11
    assert vh["server_name"] == "cn.dataone.test"
    if variant == "browser-list":
        assert (vh["state"], vh["variant"]) == ("superseded", "browser-list"), vh
    else:
        assert (vh["state"], vh["variant"]) == ("original:" + variant, variant), vh
    first, last = block_range(data)
    assert (vh["block"]["first_line"], vh["block"]["last_line"]) == (first + 1, last + 1), vh
    assert doc["apache"]["running"] is True and doc["apache"]["config_ok"] is True, doc

    human = tool(inst, "status")
    assert human.rc == 0, human
    assert human.out == "", "human status writes its lines on stderr: %r" % human.out
    line = next((ln for ln in human.err.splitlines() if real(inst) in ln), None)
    assert line is not None, human
    assert vh["state"] in line and "cn.dataone.test" in line, human
    assert re.search(r"apache: running, config ok", human.err), human


# ----------------------------------------------------------------------------- 2. diff


@pytest.mark.parametrize("variant", ORIGINALS)
def test_diff_replaces_exactly_the_block_and_patch_result_passes_configtest(
        apache_instance_factory: Callable[..., ApacheInstance], variant: str, tmp_path: Path) -> None:
    inst = apache_instance_factory(variant)
    original = inst.vhost_bytes()
    before = snapshot(inst)
    assert before["state"] is None  # the harness does not create the state dir

    r = tool(inst, "diff")
    assert r.rc == 0, r
    assert_unchanged(inst, before)
    assert r.out.startswith("--- %s\n+++ " % real(inst)), r

    first, last = block_range(original)
    ls = lines_of(original)
    removed, added = parse_diff(r.out)
    assert removed == ls[first:last + 1], r
    assert added == managed_lines("\t", "\n", live_of(inst)), r

    # --json carries the same diff.
    j = tool(inst, "diff", as_json=True)
    assert j.rc == 0, j
    assert j.json()["diff"] == r.out and j.json()["changed"] is True and j.json()["file"] == real(inst)
    assert_unchanged(inst, before)

    patched = apply_with_patch(original, r.out, tmp_path / "patch")
    # Nothing outside the block moved, byte for byte.
    expected = "".join(ls[:first] + managed_lines("\t", "\n", live_of(inst)) + ls[last + 1:]).encode("latin-1")
    assert patched == expected
    for part in UNTOUCHED:
        assert original.count(part) == 1 and patched.count(part) == 1, part
    assert patched.index(REPLICATION) == original.index(REPLICATION)  # before the block: same offset

    ok, output = swap_in_configtest(inst, patched)
    assert ok, output
    assert inst.vhost_bytes() == original


def test_diff_recognises_its_own_result_as_applied(apache_instance_factory: Callable[..., ApacheInstance],
                                                     tmp_path: Path) -> None:
    inst = apache_instance_factory("webkit-only")
    original = inst.vhost_bytes()
    patched = apply_with_patch(original, tool(inst, "diff").out, tmp_path / "patch")
    inst.write_vhost(patched)
    make_live(inst)
    assert inst.configtest().ok
    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    vh = st.json()["vhosts"][0]
    assert (vh["state"], vh["variant"], vh["file"]) == ("applied", "managed", real(inst)), st
    d = tool(inst, "diff")
    assert d.rc == 0 and d.out == "", d


def test_diff_on_browser_list_is_empty(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = apache_instance_factory("browser-list")
    before = snapshot(inst)
    r = tool(inst, "diff")
    assert r.rc == 0 and r.out == "", r
    assert "superseded" in r.err and "nothing to do" in r.err, r
    j = tool(inst, "diff", as_json=True)
    assert j.rc == 0 and j.json()["changed"] is False and j.json()["diff"] == "", j
    assert_unchanged(inst, before)


# ----------------------------------------------------------------------------- 3. line endings, indentation


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _spaces_no_final_newline(data: bytes) -> bytes:
    first, last = block_range(data)
    ls = lines_of(data)
    for i in range(first, last + 1):
        body = ls[i].lstrip("\t")
        ls[i] = "    " * (len(ls[i]) - len(body)) + body
    return "".join(ls).rstrip("\n").encode("latin-1")


TRANSFORMS = {
    "crlf": (_crlf, "\t", "\r\n"),
    "spaces-no-final-newline": (_spaces_no_final_newline, "    ", "\n"),
    "crlf-spaces-no-final-newline": (lambda d: _crlf(_spaces_no_final_newline(d)), "    ", "\r\n"),
}


@pytest.mark.parametrize("variant", ORIGINALS)
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_diff_keeps_line_endings_and_indentation(apache_instance_factory: Callable[..., ApacheInstance],
                                                 tmp_path: Path, variant: str, transform: str) -> None:
    fn, indent, eol = TRANSFORMS[transform]
    inst = apache_instance_factory(variant)
    original = fn(inst.vhost_bytes())
    if "no-final" in transform:
        assert not original.endswith(b"\n")
    inst.write_vhost(original)
    pre = inst.configtest()
    assert pre.ok, pre.output  # Apache takes the file as it is
    before = snapshot(inst)

    r = tool(inst, "diff")
    assert r.rc == 0, r
    assert_unchanged(inst, before)
    first, last = block_range(original)
    ls = lines_of(original)
    removed, added = parse_diff(r.out)
    assert removed == ls[first:last + 1], r
    assert added == managed_lines(indent, eol, live_of(inst)), repr(added)

    patched = apply_with_patch(original, r.out, tmp_path / "patch")
    assert patched == "".join(ls[:first] + added + ls[last + 1:]).encode("latin-1")
    if eol == "\r\n":
        assert patched.count(b"\n") == patched.count(b"\r\n"), "bare LF in a CRLF file"
    if "no-final" in transform:
        assert patched.endswith(b"</IfModule>"), patched[-40:]
    for part in UNTOUCHED:
        part = part.replace(b"\n", eol.encode())
        assert original.count(part) == 1 and patched.count(part) == 1, part
    ok, output = swap_in_configtest(inst, patched)
    assert ok, output


# ----------------------------------------------------------------------------- 4. backups, disabled sites


def test_locate_ignores_backups_disabled_sites_and_non_conf_files(
        apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = apache_instance_factory("webkit-only")
    data = inst.vhost_bytes()
    avail = inst.confdir / "sites-available"
    (avail / "cn-ssl.conf.20240101120000").write_bytes(data)  # dataone-cn-os-core's upgrade copy
    (avail / "cn-ssl.conf.bak").write_bytes(data)  # sed -i.bak
    (avail / "old-cn.conf").write_bytes(data.replace(b"ServerName cn.dataone.test", b"ServerName old-cn.dataone.test"))
    (inst.confdir / "sites-enabled" / "cn-ssl.conf.dpkg-old").write_bytes(data)  # not *.conf: Apache skips it
    assert inst.configtest().ok
    inst.start()

    before = snapshot(inst)
    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    doc = st.json()
    assert doc["source"] == "apache", doc
    assert [v["file"] for v in doc["vhosts"]] == [real(inst)], doc
    assert doc["vhosts"][0]["server_name"] == "cn.dataone.test"
    d = tool(inst, "diff")
    assert d.rc == 0 and d.out.startswith("--- %s\n" % real(inst)), d
    assert_unchanged(inst, before)

    # The fallback walk (Apache's config test fails for an unrelated reason) must not pick them either.
    broken = inst.enable_conf("zz-broken", "ThisIsNotADirective on\n")
    assert not inst.configtest().ok
    try:
        st = tool(inst, "status", as_json=True)
    finally:  # `apache2ctl stop` refuses a broken config: mend it so teardown stops the server at once
        (inst.confdir / "conf-enabled" / broken.name).unlink()
    assert st.rc == 0, st
    doc = st.json()
    assert doc["source"] == "walk" and doc["apache"]["config_ok"] is False, doc
    assert [v["file"] for v in doc["vhosts"]] == [real(inst)], doc


# ----------------------------------------------------------------------------- 5. two CN vhosts


def test_two_cn_vhosts_diff_refuses_and_vhost_picks_one(apache_instance_factory: Callable[..., ApacheInstance],
                                                         tmp_path: Path) -> None:
    inst = apache_instance_factory("webkit-only")
    values = inst.values()
    p_https, p_http = free_port(), free_port()
    values.update(server_name="cn2.dataone.test", https_port=str(p_https), http_port=str(p_http))
    second_data = (b"Listen 127.0.0.1:%d\nListen 127.0.0.1:%d\n" % (p_https, p_http)) + render_fixture("webkit-only", **values)
    second = enable_site(inst, "cn2-ssl", second_data)
    assert inst.configtest().ok, inst.configtest().output
    before = snapshot(inst)

    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    assert sorted((v["file"], v["server_name"]) for v in st.json()["vhosts"]) == sorted(
        [(real(inst), "cn.dataone.test"), (str(second), "cn2.dataone.test")]), st

    d = tool(inst, "diff")
    assert d.rc == 2, d
    assert d.out == "", d
    assert real(inst) in d.err and str(second) in d.err and "--vhost" in d.err, d
    assert_unchanged(inst, before)
    assert second.read_bytes() == second_data

    d2 = tool(inst, "diff", vhost=str(second))
    assert d2.rc == 0, d2
    assert d2.out.startswith("--- %s\n" % second), d2
    first, last = block_range(second_data)
    removed, added = parse_diff(d2.out)
    assert removed == lines_of(second_data)[first:last + 1]
    assert added == managed_lines("\t", "\n", live_of(inst))
    assert second.read_bytes() == second_data

    # Named through the sites-enabled symlink: reported at its real path.
    d1 = tool(inst, "diff", vhost=str(inst.vhost_link))
    assert d1.rc == 0 and d1.out.startswith("--- %s\n" % real(inst)), d1
    assert_unchanged(inst, before)


def test_a_copy_enabled_as_conf_makes_diff_refuse(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """A hand-made copy in sites-enabled ending in .conf IS loaded: two vhosts share a name, refuse (never guess)."""
    inst = apache_instance_factory("webkit-only")
    copy = inst.confdir / "sites-enabled" / "cn-ssl-backup.conf"
    copy.write_bytes(inst.vhost_bytes())
    assert inst.configtest().ok
    before = snapshot(inst)
    d = tool(inst, "diff")
    assert d.rc == 2 and real(inst) in d.err and str(copy) in d.err, d
    assert_unchanged(inst, before)


def test_same_file_enabled_twice_is_one_vhost(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """a2ensite under two names: Apache lists the file twice, but it is one file with one block."""
    inst = apache_instance_factory("webkit-only")
    os.symlink("../sites-available/cn-ssl.conf", str(inst.confdir / "sites-enabled" / "001-cn.conf"))
    ct = inst.configtest()
    assert ct.ok, ct.output
    assert inst.apache2ctl("-t", "-D", "DUMP_INCLUDES").output.count("sites-enabled/") == 2
    before = snapshot(inst)
    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    assert [v["file"] for v in st.json()["vhosts"]] == [real(inst)], st
    d = tool(inst, "diff")
    assert d.rc == 0 and d.out.startswith("--- %s\n" % real(inst)), d
    assert_unchanged(inst, before)


def test_two_cn_vhosts_in_one_file_refusal_does_not_send_operator_in_circles(
        apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = apache_instance_factory("webkit-only")
    vals = inst.values()
    port = free_port()
    vals.update(https_port=str(port), server_name="cn2.dataone.test")
    second = render_fixture("webkit-only", **vals)
    vh2 = second[second.index(b"<VirtualHost"):second.index(b"</VirtualHost>\n") + len(b"</VirtualHost>\n")]
    data = inst.vhost_bytes().replace(b"</IfModule>\n", b"Listen 127.0.0.1:%d\n" % port + vh2 + b"</IfModule>\n")
    inst.write_vhost(data)
    assert inst.configtest().ok
    line2 = next(i for i, ln in enumerate(lines_of(data), 1) if ln.startswith("<VirtualHost *:%d>" % port))
    before = snapshot(inst)
    for vhost in (None, real(inst)):
        d = tool(inst, "diff", vhost=vhost)
        assert d.rc == 2, d
        assert "%s:11 " % real(inst) in d.err and "%s:%d " % (real(inst), line2) in d.err, d
        assert "name one with --vhost" not in d.err, "--vhost FILE cannot pick a vhost inside one file:\n%s" % d
    assert_unchanged(inst, before)


# ----------------------------------------------------------------------------- 6. --vhost


def test_vhost_override_for_a_file_apache_does_not_load(apache_instance_factory: Callable[..., ApacheInstance],
                                                          tmp_path: Path) -> None:
    inst = apache_instance_factory("plain-optional")
    elsewhere = tmp_path / "elsewhere" / "cn-ssl.conf"
    elsewhere.parent.mkdir()
    data = render_fixture("webkit-if-else", **inst.values())
    elsewhere.write_bytes(data)
    mtime = elsewhere.stat().st_mtime_ns
    before = snapshot(inst)

    st = tool(inst, "status", vhost=str(elsewhere), as_json=True)
    assert st.rc == 0, st
    doc = st.json()
    assert doc["source"] == "--vhost", doc
    assert [(v["file"], v["state"]) for v in doc["vhosts"]] == [(str(elsewhere), "original:webkit-if-else")], doc

    d = tool(inst, "diff", vhost=str(elsewhere))
    assert d.rc == 0 and d.out.startswith("--- %s\n" % elsewhere), d
    first, last = block_range(data)
    assert parse_diff(d.out)[0] == lines_of(data)[first:last + 1]
    assert elsewhere.read_bytes() == data and elsewhere.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(str(elsewhere.parent))) == ["cn-ssl.conf"]
    assert_unchanged(inst, before)


@pytest.mark.parametrize("command", ["status", "diff"])
def test_vhost_override_missing_file_is_refused(apache_instance_factory: Callable[..., ApacheInstance],
                                                command: str) -> None:
    inst = apache_instance_factory("webkit-only")
    missing = "/nonexistent/dataone-test/cn-ssl.conf"
    r = tool(inst, command, vhost=missing)
    assert r.rc == 2, r
    assert missing in r.err and r.out == "", r
    j = tool(inst, command, vhost=missing, as_json=True)
    assert j.rc == 2, j
    assert j.json()["result"] == "refused" and missing in j.json()["error"], j


# ----------------------------------------------------------------------------- 7. no CN vhost


def _default_ssl(inst: ApacheInstance) -> bytes:
    return (
        "<IfModule mod_ssl.c>\n"
        "\t<VirtualHost 127.0.0.1:%d>\n"
        "\t\tServerAdmin webmaster@localhost\n"
        "\t\tServerName localhost\n"
        "\t\tDocumentRoot %s\n"
        "\t\tSSLEngine on\n"
        "\t\tSSLCertificateFile %s\n"
        "\t\tSSLCertificateKeyFile %s\n"
        "\t\t<FilesMatch \"\\.(cgi|shtml|phtml|php)$\">\n"
        "\t\t\tSSLOptions +StdEnvVars\n"
        "\t\t</FilesMatch>\n"
        "\t</VirtualHost>\n"
        "</IfModule>\n" % (inst.https_port, inst.docroot, inst.pki.server_cert, inst.pki.server_key)
    ).encode()


def test_no_cn_vhost_exits_4(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = apache_instance_factory("webkit-only")
    inst.vhost_link.unlink()  # a2dissite cn-ssl
    default_ssl = enable_site(inst, "default-ssl", _default_ssl(inst))
    assert inst.configtest().ok
    inst.start()
    before = snapshot(inst)

    st = tool(inst, "status", as_json=True)
    assert st.rc == 4, st
    doc = st.json()
    assert [(v["file"], v["state"]) for v in doc["vhosts"]] == [(str(default_ssl), "absent")], doc
    assert doc["apache"]["running"] is True and doc["apache"]["config_ok"] is True

    human = tool(inst, "status")
    assert human.rc == 4, human
    assert re.search(r"^vhost: %s .*: absent$" % re.escape(str(default_ssl)), human.err, re.M), human

    for as_json in (False, True):
        d = tool(inst, "diff", as_json=as_json)
        assert d.rc == 4, d
        assert re.search(r"no CN SSL vhost", d.err, re.I) and str(default_ssl) in d.err, d
        if as_json:
            assert d.json()["result"] == "not-found", d
        else:
            assert d.out == "", d
    assert_unchanged(inst, before)


def test_status_says_why_it_exits_4(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """An operator running `status` on a host without a CN vhost is told so, not just shown `absent`."""
    inst = apache_instance_factory("webkit-only")
    inst.vhost_link.unlink()
    default_ssl = enable_site(inst, "default-ssl", _default_ssl(inst))
    assert inst.configtest().ok
    human = tool(inst, "status")
    assert human.rc == 4, human
    assert re.search(r"no CN SSL vhost", human.err, re.I), "status exits 4 without saying why:\n%s" % human
    assert str(default_ssl) in human.err


def test_no_ssl_vhost_at_all_exits_4(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    inst = apache_instance_factory("webkit-only")
    inst.vhost_link.unlink()
    assert inst.configtest().ok
    st = tool(inst, "status")
    assert st.rc == 4 and "no SSL vhost found" in st.err, st
    d = tool(inst, "diff")
    assert d.rc == 4 and re.search(r"no CN SSL vhost", d.err, re.I), d


# ----------------------------------------------------------------------------- 8. unrecognised blocks


UNRECOGNISED = {
    # name: (fixture, old bytes, new bytes, 0-based offset of the reported line from the block start)
    "optional_no_ca": ("plain-optional", b"\n\tSSLVerifyClient optional\n", b"\n\tSSLVerifyClient optional_no_ca\n", 0),
    "unknown-regex-list": ("webkit-only", b"/webkit/i", b"/(webkit|trident)/i", 2),
    "unknown-regex-shape": ("webkit-only", b"/webkit/i", b"/^Mozilla.*Gecko/", 2),
}


@pytest.mark.parametrize("case", sorted(UNRECOGNISED))
def test_unrecognised_block_is_reported_and_refused(apache_instance_factory: Callable[..., ApacheInstance],
                                                    case: str) -> None:
    variant, old, new, offset = UNRECOGNISED[case]
    inst = apache_instance_factory(variant)
    data = inst.vhost_bytes()
    assert data.count(old) == 1
    data = data.replace(old, new)
    inst.write_vhost(data)
    assert inst.configtest().ok  # Apache takes it: only the tool does not know it
    reported = block_range(data)[0] + 1 + offset
    # FILE:LINE or FILE:FIRST-LAST, then the message
    where = r"%s:%d(?:-\d+)?: \S" % (re.escape(real(inst)), reported)
    before = snapshot(inst)

    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    vh = st.json()["vhosts"]
    assert len(vh) == 1 and vh[0]["state"] == "unrecognised" and vh[0]["variant"] is None, st
    assert re.match(where, vh[0]["reason"]), vh[0]["reason"]
    assert re.search(r"expected|neither", vh[0]["reason"]), vh[0]["reason"]  # says what it wanted instead
    human = tool(inst, "status")
    assert re.search(r"^vhost: .*: unrecognised$", human.err, re.M), human
    assert re.search(r"^  reason: " + where, human.err, re.M), human

    d = tool(inst, "diff")
    assert d.rc == 2, d
    assert d.out == "" and re.search(where, d.err), d
    assert_unchanged(inst, before)


# ----------------------------------------------------------------------------- 9. broken configuration


STRUCTURAL = {
    # name: (edit, Apache's message, ours) -- the unclosed replication <Location> is
    # noticed by both at the </VirtualHost> line.
    "unclosed-location": (lambda d: d.replace(b"\t\tSSLVerifyDepth  10\n\t</Location>\n", b"\t\tSSLVerifyDepth  10\n"),
                          "</VirtualHost>", r"</VirtualHost> closes <Location> opened at line \d+"),
    "stray-close": (lambda d: d.replace(b"\tAcceptPathInfo On\t\n", b"\tAcceptPathInfo On\t\n\t</Location>\n"),
                    "</Location>", r"</Location>"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_structural_error_is_refused_with_file_and_line(apache_instance_factory: Callable[..., ApacheInstance],
                                                        case: str) -> None:
    edit, apache_word, ours = STRUCTURAL[case]
    inst = apache_instance_factory("webkit-only")
    data = edit(inst.vhost_bytes())
    assert data != inst.vhost_bytes()
    inst.write_vhost(data)
    ct = inst.configtest()
    assert not ct.ok, ct.output
    m = re.search(r"line (\d+) of %s:" % re.escape(str(inst.vhost_link)), ct.output)
    assert m and apache_word in ct.output, ct.output
    apache_line = int(m.group(1))
    before = snapshot(inst)

    for command in ("status", "diff"):
        r = tool(inst, command)
        assert r.rc == 2, r
        assert r.out == "", r
        # Same file:line Apache names, at the real path.
        assert re.search(r"%s:%d: %s" % (re.escape(real(inst)), apache_line, ours), r.err), r
        j = tool(inst, command, as_json=True)
        assert j.rc == 2 and j.json()["result"] == "refused", j
    assert_unchanged(inst, before)


def test_config_broken_elsewhere_status_walks_includes(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """Apache's own answer is gone (config test fails): status still finds the vhost by walking includes."""
    inst = apache_instance_factory("webkit-only")
    inst.start()
    good = inst.vhost_bytes()
    data = good.replace(b"\tAllowEncodedSlashes On\n", b"\tAllowEncodedSlashs On\n")
    inst.write_vhost(data)
    try:
        _check_broken_elsewhere(inst)
    finally:  # `apache2ctl stop` refuses a broken config: mend it so teardown stops the server at once
        inst.write_vhost(good)


def _check_broken_elsewhere(inst: ApacheInstance) -> None:
    ct = inst.configtest()
    assert not ct.ok and "AllowEncodedSlashs" in ct.output, ct.output
    before = snapshot(inst)

    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    doc = st.json()
    assert doc["source"] == "walk", doc
    assert doc["apache"] == dict(doc["apache"], running=True, config_ok=False), doc
    assert [(v["file"], v["state"]) for v in doc["vhosts"]] == [(real(inst), "original:webkit-only")], doc
    human = tool(inst, "status")
    assert human.rc == 0 and "apache: running, config FAILS configtest" in human.err, human
    bad_line = next(i for i, ln in enumerate(lines_of(inst.vhost_bytes()), 1) if "AllowEncodedSlashs" in ln)
    assert "line %d of %s" % (bad_line, inst.vhost_link) in human.err, human  # where Apache says it is broken
    # diff still previews the patch (apply, not diff, refuses a broken config); it writes nothing.
    d = tool(inst, "diff")
    assert d.rc == 0 and d.out.startswith("--- %s\n" % real(inst)), d
    assert_unchanged(inst, before)


def test_status_shows_apaches_reason_when_config_is_broken(
        apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """Apache prints "Syntax error on line N of FILE:" and the reason on the next line; status must show the reason."""
    inst = apache_instance_factory("webkit-only")
    inst.write_vhost(inst.vhost_bytes().replace(b"\tAllowEncodedSlashes On\n", b"\tAllowEncodedSlashs On\n"))
    assert "Invalid command 'AllowEncodedSlashs'" in inst.configtest().output
    human = tool(inst, "status")
    assert human.rc == 0, human
    assert "Invalid command 'AllowEncodedSlashs'" in human.err, human


# ----------------------------------------------------------------------------- 10. case and quoting


ODD_SPELLING = (
    b"\tsslverifyclient None\n"
    b"\t<location '/cn'>\n"
    b"\t\t<IF \"!(%{HTTP_USER_AGENT}=~/webkit/i)\">\n"
    b"\t\t\tSSLVERIFYCLIENT optional\n"
    b"\t\t</IF>\n"
    b"\t</location>\n"
    b"\tsslVerifyDepth 10\n"
)


def test_directive_case_and_quoting_are_recognised(apache_instance_factory: Callable[..., ApacheInstance],
                                                   tmp_path: Path) -> None:
    inst = apache_instance_factory("webkit-only")
    data = replace_block(inst.vhost_bytes(), ODD_SPELLING)
    inst.write_vhost(data)
    ct = inst.configtest()
    assert ct.ok, ct.output
    inst.start()
    # Apache reads it as the webkit-only policy: an API client is asked on /cn (TLS 1.2
    # renegotiation), a WebKit browser is not.
    api = inst.request("/cn/", user_agent=USER_AGENTS["curl"], tls="1.2")
    assert api.status == 200 and api.cert_request_post is True, api
    safari = inst.request("/cn/", user_agent=USER_AGENTS["safari"], tls="1.2")
    assert safari.status == 200 and safari.cert_requested is False, safari

    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    vh = st.json()["vhosts"]
    assert [(v["file"], v["state"], v["variant"]) for v in vh] == [(real(inst), "original:webkit-only", "webkit-only")], st
    assert st.json()["apache"]["running"] is True

    d = tool(inst, "diff")
    assert d.rc == 0, d
    removed, added = parse_diff(d.out)
    assert "".join(removed).encode("latin-1") == ODD_SPELLING
    assert added == managed_lines("\t", "\n", live_of(inst))
    ok, output = swap_in_configtest(inst, apply_with_patch(data, d.out, tmp_path / "patch"))
    assert ok, output


def test_an_admin_vhost_requiring_certificates_does_not_hide_the_cn(
        apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """A second SSL vhost with vhost-level `SSLVerifyClient require` is another policy: the CN is still found."""
    inst = apache_instance_factory("webkit-only")
    port = free_port()
    pki = inst.pki
    admin = (b"Listen 127.0.0.1:%d\n<VirtualHost *:%d>\n\tServerName admin.dataone.test\n\tSSLEngine on\n"
             b"\tSSLVerifyClient require\n\tSSLVerifyDepth 2\n\tSSLCertificateFile %s\n\tSSLCertificateKeyFile %s\n"
             b"\tSSLCACertificateFile %s\n</VirtualHost>\n"
             % (port, port, str(pki.server_cert).encode(), str(pki.server_key).encode(), str(pki.ca_cert).encode()))
    site = enable_site(inst, "admin-ssl", admin)
    assert inst.configtest().ok, inst.configtest().output
    st = tool(inst, "status", as_json=True)
    assert st.rc == 0, st
    states = {v["server_name"]: v["state"] for v in st.json()["vhosts"]}
    assert states == {"cn.dataone.test": "original:webkit-only", "admin.dataone.test": "absent"}, st
    d = tool(inst, "diff")
    assert d.rc == 0 and d.out.startswith("--- %s\n" % real(inst)), d
    assert site.read_bytes() == admin
