"""The .deb through every dpkg event, with apt, in Debian 12 and 13 chroots with Apache running inside.

Each test gets a fresh chroot (``chroot.py``: an overlay of the cached
debootstrap tree in its own namespaces, Apache on free loopback ports),
publishes the .debs it needs in a local apt repository inside it, and drives
``apt-get`` the way an operator or an unattended upgrade does.  Our .deb is
built from this tree by ``scripts/build-deb`` (or taken from
``$DATAONE_CN_SSLVERIFY_DEB``); its "upgrades" are the same .deb repacked with
a higher version (and, for the conffile case, a changed snippet).  The CN side is
played by a stand-in ``dataone-cn-os-core`` (``standin/``) that behaves like
the real one: its postinst copies the vhost template over
``sites-available/cn-ssl.conf``, keeps a timestamped copy of a locally changed
vhost, fills placeholders with ``sed -i.bak``, enables site and modules and
stops/starts Apache through ``invoke-rc.d``.

Every test checks both the vhost **bytes** and the **live** behaviour, with
the real curl on the host against 127.0.0.1:PORT over TLS 1.2, reading curl's
``-v`` handshake trace: under the original (webkit-only) block an IE11
User-Agent gets a renegotiation with a CertificateRequest on ``/cn/``; under
the policy it does not, while an API client (curl's User-Agent) still does.

Every test runs once per suite of ``$DATAONE_CN_SSLVERIFY_LIFECYCLE_SUITES``
(default ``bookworm trixie``); six of them (install, upgrade, trigger, failed
apply, remove, purge) also on ``$DATAONE_CN_SSLVERIFY_LIFECYCLE_SUBSET_SUITES``
(default ``bullseye``: Debian 11, OpenSSL 1.1.1, Python 3.9).  Each takes ~3-10 s (piuparts ~25 s); the first
run on a machine builds each cached chroot (~70 s each).  Marked ``lifecycle`` (and ``package``);
``make lifecycle`` runs only these.  ``DATAONE_CN_SSLVERIFY_KEEP_CHROOT=1``
keeps each test's overlay upper dir (its changes) for inspection.
"""

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

from dataone_cn_sslverify.records import dataclass

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import chroot as C  # noqa: E402

pytestmark = [pytest.mark.lifecycle, pytest.mark.package]

REPO_ROOT = HERE.parents[1]
OURS = "dataone-cn-sslverify"
STANDIN = "dataone-cn-os-core"
VHOST = "/etc/apache2/sites-available/cn-ssl.conf"
SNIPPET = "/etc/dataone/apache2/cn-sslverify.conf"
STATE_DIR = "/var/lib/dataone-cn-sslverify"
TEMPLATE = "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf"

IE11 = C.IE11_UA
CURL_UA = C.CURL_UA
EXEMPT_UA = "Julia/1.9.3 HTTP.jl/1.10.0"  # an operator-exempted client family (not an API client of the catalogue)

#: The client-verification block of the stand-in's template (the fixture, production before the change).
ORIGINAL_BLOCK = (b'\tSSLVerifyClient none\n\t<Location "/cn">\n'
                  b'\t\t<If " ! ( %{HTTP_USER_AGENT} =~ /webkit/i )">\n'
                  b'\t\t\tSSLVerifyClient optional\n\t\t</If>\n\t</Location>\n\tSSLVerifyDepth 10\n')
#: What docs/design.md says replaces it, indented like the block.
MANAGED_BLOCK = (b"\t# dataone-cn-sslverify: begin (managed; `dataone-cn-sslverify revert` restores the original)\n"
                 b"\tInclude /etc/dataone/apache2/cn-sslverify.live.conf\n"
                 b"\t# dataone-cn-sslverify: end\n")


# ----------------------------------------------------------------------------- live client


def live(ch: C.Chroot, ua: str, path: str = "/cn/", tls: str = "1.2") -> C.Live:
    return C.live(ch, ua, path, tls)


def assert_live_applied(ch: C.Chroot, extra_browser_uas: Tuple[str, ...] = ()) -> None:
    """The policy is what Apache serves: IE11 not asked, an API client asked (TLS 1.2 renegotiation)."""
    for ua in (IE11,) + extra_browser_uas:
        r = live(ch, ua)
        assert r.status == 200 and not r.asked, f"browser asked for a certificate (policy not live): {r}"
    r = live(ch, CURL_UA)
    assert r.status == 200 and r.asked_post and not r.asked_initial, f"API client not asked: {r}"


def assert_live_original(ch: C.Chroot) -> None:
    """The original webkit-only block is what Apache serves: IE11 is asked (renegotiation)."""
    r = live(ch, IE11)
    assert r.status == 200 and r.asked_post, f"IE11 not asked: the original block is not live: {r}"


# ----------------------------------------------------------------------------- vhost bytes


def expected_applied(original: bytes) -> bytes:
    assert original.count(ORIGINAL_BLOCK) == 1, "the stand-in's vhost does not hold the fixture's block"
    return original.replace(ORIGINAL_BLOCK, MANAGED_BLOCK)


def vhost(ch: C.Chroot) -> bytes:
    return ch.read_bytes(VHOST)


def status_json(ch: C.Chroot) -> dict:
    r = ch.run([OURS, "--json", "status"])
    assert r.stdout.strip(), f"status --json printed nothing:\n{r}"
    return json.loads(r.stdout)


def vhost_state(ch: C.Chroot) -> str:
    doc = status_json(ch)
    states = [v["state"] for v in doc["vhosts"] if v["file"] == VHOST]
    assert len(states) == 1, doc
    return states[0]


# ----------------------------------------------------------------------------- dpkg/apt evidence


def dpkg_log_since(ch: C.Chroot, mark: int) -> List[str]:
    return ch.dpkg_log()[mark:].splitlines()


def order_of(lines: List[str], *needles: str) -> List[int]:
    """Index of the first line containing each needle (-1 if absent)."""
    out = []
    for n in needles:
        out.append(next((i for i, line in enumerate(lines) if n in line), -1))
    return out


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def graceful_count(ch: C.Chroot) -> int:
    """How many times Apache (re)started a generation: one "resuming normal operations" each."""
    return ch.error_log().count("resuming normal operations")


# ----------------------------------------------------------------------------- fixtures


@dataclass
class Debs:
    ours: Path
    version: str
    ours_up: Path  # same payload, higher version: "an upgrade that changes nothing"
    version_up: str
    ours_up_conf: Path  # higher version again, the snippet (conffile) changed upstream
    version_up_conf: str
    standin_10: Path
    standin_11: Path
    standin_12_superseded: Path


def apt_ensure(*packages: str) -> None:
    """Install missing host tools the way `make` does (scripts/apt-ensure): `make test` works on a fresh host."""
    p = subprocess.run(["sh", str(REPO_ROOT / "scripts" / "apt-ensure"), *packages], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env={"PATH": C.SYSTEM_PATH, "HOME": "/root"})
    assert p.returncode == 0, f"apt-ensure {' '.join(packages)} failed:\n{p.stdout.decode(errors='replace')}"


#: Debian releases to run every lifecycle test on (Debian 12 is what CNs run next to Ubuntu; 13 is next).
SUITES = os.environ.get("DATAONE_CN_SSLVERIFY_LIFECYCLE_SUITES", "bookworm trixie").split()
#: Releases that run only SUBSET (to keep CI short): Debian 11, the nearest Debian to the Ubuntu 18.04/20.04
#: CNs (OpenSSL 1.1.1, Python 3.9). DATAONE_CN_SSLVERIFY_LIFECYCLE_SUITES=bullseye runs every test there.
SUBSET_SUITES = os.environ.get("DATAONE_CN_SSLVERIFY_LIFECYCLE_SUBSET_SUITES", "bullseye").split()
SUBSET = {"test_install_after_the_standin_applies", "test_upgrade_of_ours_changes_nothing_and_does_not_reload",
          "test_upgrade_of_the_standin_rewrites_the_vhost_and_the_trigger_reapplies",
          "test_apply_failure_in_postinst_keeps_the_old_config_and_configure_a_recovers",
          "test_remove_restores_the_vhost_bytes_and_apache_keeps_serving", "test_purge_leaves_no_file_of_ours"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "suite" in metafunc.fixturenames:
        extra = [s for s in SUBSET_SUITES if s not in SUITES] if metafunc.function.__name__ in SUBSET else []
        metafunc.parametrize("suite", SUITES + extra, indirect=True, scope="session")


@pytest.fixture(scope="session")
def suite(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def base_tree(suite: str) -> Path:
    apt_ensure("debootstrap", "dpkg-dev", "curl")
    return C.base_tree(suite)  # logs debootstrap/apt/tar times on stderr when it builds the cache


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory, our_deb: Path) -> Debs:
    """Our .deb built from this tree (or $DATAONE_CN_SSLVERIFY_DEB), its repacked upgrades, the stand-ins."""
    out = tmp_path_factory.mktemp("debs")
    ours = our_deb
    version = C.deb_field(ours, "Version")
    up, up_conf = version + "+lc1", version + "+lc2"

    def new_snippet(tree: Path) -> None:
        f = tree / SNIPPET.lstrip("/")
        text = f.read_text()
        f.write_text(text.replace("# Client-certificate policy", "# (lifecycle test: upstream changed this line)\n"
                                  "# Client-certificate policy", 1))

    return Debs(
        ours=ours, version=version,
        ours_up=C.repack(ours, out, up), version_up=up,
        ours_up_conf=C.repack(ours, out, up_conf, new_snippet), version_up_conf=up_conf,
        standin_10=C.build_standin("1.0", out),
        standin_11=C.build_standin("1.1", out, template_note="dataone-cn-os-core 1.1: new upstream template"),
        standin_12_superseded=C.build_standin("1.2", out, variant="browser-list"),
    )


@pytest.fixture
def ch(request: pytest.FixtureRequest, base_tree: Path, tmp_path: Path) -> Iterator[C.Chroot]:
    """A fresh chroot: throwaway PKI in /etc/ssl/dataone, stand-in settings, service actions allowed."""
    failed_before = request.session.testsfailed
    c = C.Chroot(tmp_path, base_tree)
    try:
        C.prepare_cn(c)
        c.set_policy_rc(allow=True)
        yield c
    finally:
        # The call phase's report is logged before teardown: a failure shows in testsfailed.
        if request.session.testsfailed > failed_before or os.environ.get("DATAONE_CN_SSLVERIFY_KEEP_CHROOT"):
            sys.stderr.write(f"\n--- chroot {c.dir}: Apache error.log (tail) ---\n{c.error_log()[-3000:]}\n"
                             f"--- dpkg.log (tail) ---\n{c.dpkg_log()[-3000:]}\n")
        c.close(keep=bool(os.environ.get("DATAONE_CN_SSLVERIFY_KEEP_CHROOT")))


def apt_ok(ch: C.Chroot, *args: str) -> C.Run:
    r = ch.apt(*args)
    assert r.ok, f"apt-get {' '.join(args)} failed:\n{r}"
    return r


def with_standin(ch: C.Chroot, debs: Debs, *more: Path) -> bytes:
    """Publish the stand-in 1.0 (+ more), install it, check the original vhost is live; its bytes."""
    ch.publish([debs.standin_10, *more])
    apt_ok(ch, "install", f"{STANDIN}=1.0")
    ch.wait_apache(True)
    original = vhost(ch)
    assert original.count(ORIGINAL_BLOCK) == 1
    assert_live_original(ch)
    return original


# ----------------------------------------------------------------------------- tests


def test_install_before_the_standin_then_the_trigger_applies(ch: C.Chroot, debs: Debs) -> None:
    """Ours first: no vhost, a note, success.  Then dataone-cn-os-core's first install writes the vhost and
    installs the template, which activates our file trigger: the policy is live by the end of that apt run."""
    ch.publish([debs.ours, debs.standin_10])
    r = apt_ok(ch, "install", OURS)
    assert "no CN SSL vhost" in r.output, r
    assert not ch.exists(VHOST)
    assert ch.dpkg_status(OURS).startswith("install ok installed")

    mark = len(ch.dpkg_log())
    r = apt_ok(ch, "install", f"{STANDIN}=1.0")
    out = r.output
    setting_up, triggers = out.find(f"Setting up {STANDIN} (1.0)"), out.find(f"Processing triggers for {OURS}")
    assert 0 <= setting_up < triggers, f"expected our trigger after the stand-in's postinst:\n{r}"
    log = dpkg_log_since(ch, mark)
    installed, trigproc = order_of(log, f"status installed {STANDIN}:all 1.0", f"trigproc {OURS}:all")
    assert 0 <= installed < trigproc, "\n".join(log)

    original = ch.read_bytes(VHOST + ".bak")  # the stand-in's sed -i.bak: the template before the fill
    assert vhost(ch) == expected_applied(_filled(ch, original))
    assert vhost_state(ch) == "applied"
    assert_live_applied(ch)


def _filled(ch: C.Chroot, template: bytes) -> bytes:
    """The template with the stand-in's placeholder values (what its postinst writes)."""
    values = dict(line.split("=", 1) for line in C.standin_settings(ch).splitlines() if "=" in line)
    out = template
    for k, v in values.items():
        out = out.replace(f"@{k}@".encode(), v.encode())
    return out


def test_install_after_the_standin_applies(ch: C.Chroot, debs: Debs) -> None:
    original = with_standin(ch, debs, debs.ours)
    pid = ch.apache_pid()
    r = apt_ok(ch, "install", OURS)
    assert vhost(ch) == expected_applied(original), r
    assert vhost_state(ch) == "applied"
    assert ch.apache_pid() == pid, "a graceful reload keeps the master process"
    assert_live_applied(ch)
    mode = os.stat(ch.path(STATE_DIR)).st_mode
    assert stat.S_IMODE(mode) == 0o700, oct(mode)


def test_install_both_in_one_apt_run(ch: C.Chroot, debs: Debs) -> None:
    """`apt install dataone-cn-sslverify dataone-cn-os-core`: whatever order apt picks, applied at the end.

    What apt does (dpkg.log): unpack dataone-cn-os-core (the template; our interest is not registered yet),
    unpack ours, configure ours (no vhost yet: a note), configure dataone-cn-os-core (writes the vhost).
    Debian 13's dpkg then marks ours triggers-pending by itself; Debian 12's does not, so our postinst
    activates its own trigger (dataone-cn-sslverify-reapply) when dataone-cn-os-core is still unconfigured.
    Either way `postinst triggered` must run after dataone-cn-os-core's postinst."""
    ch.publish([debs.ours, debs.standin_10])
    r = apt_ok(ch, "install", OURS, f"{STANDIN}=1.0")
    assert_trigger_after_standin(r, "1.0")
    assert vhost(ch) == expected_applied(_filled(ch, ch.read_bytes(VHOST + ".bak"))), r
    assert_live_applied(ch)


def assert_trigger_after_standin(r: C.Run, version: str) -> None:
    """In apt's output (stdout and stderr merged, in order): the stand-in's postinst wrote the vhost, and
    *after* that our `postinst triggered` ran (the last word on the vhost in this apt run)."""
    out = r.output
    wrote = out.find("dataone-cn-os-core: wrote", out.find(f"Setting up {STANDIN} ({version})"))
    triggered = out.rfind(f"Processing triggers for {OURS}")
    assert 0 <= wrote < triggered, f"our trigger did not run after the stand-in rewrote the vhost:\n{r}"
    assert "postinst triggered" in out[triggered:], r


def test_upgrade_of_ours_changes_nothing_and_does_not_reload(ch: C.Chroot, debs: Debs) -> None:
    original = with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    applied = vhost(ch)
    assert applied == expected_applied(original)
    procs, gens, state = ch.apache_processes(), graceful_count(ch), _listing(ch, STATE_DIR)

    ch.publish([debs.standin_10, debs.ours_up])
    r = apt_ok(ch, "upgrade")
    assert f"Unpacking {OURS} ({debs.version_up})" in r.output, r
    assert ch.dpkg_status(OURS) == f"install ok installed {debs.version_up}"
    assert vhost(ch) == applied
    assert ch.apache_processes() == procs, f"Apache processes changed (a reload or restart happened):\n{r}"
    assert graceful_count(ch) == gens, f"a new Apache generation started:\n{r}\n{ch.error_log()[-2000:]}"
    assert _listing(ch, STATE_DIR) == state, "the upgrade wrote backups or state although nothing changed"
    assert_live_applied(ch)


def test_upgrade_of_the_standin_rewrites_the_vhost_and_the_trigger_reapplies(ch: C.Chroot, debs: Debs) -> None:
    with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    applied_10 = vhost(ch)

    ch.publish([debs.ours, debs.standin_11])
    mark = len(ch.dpkg_log())
    r = apt_ok(ch, "upgrade")
    out = r.output
    # Order within the one apt run: the stand-in's postinst (rewrites the vhost, restarts Apache), then our trigger.
    i_setup, i_wrote, i_trig = (out.find(f"Setting up {STANDIN} (1.1)"), out.find("dataone-cn-os-core: wrote"),
                                out.find(f"Processing triggers for {OURS}"))
    assert 0 <= i_setup < i_wrote < i_trig, f"unexpected order:\n{r}"
    log = dpkg_log_since(ch, mark)
    i_installed, i_trigproc = order_of(log, f"status installed {STANDIN}:all 1.1", f"trigproc {OURS}:all")
    assert 0 <= i_installed < i_trigproc, "\n".join(log)

    new_original = _filled(ch, ch.read_bytes(TEMPLATE))
    assert b"dataone-cn-os-core 1.1: new upstream template" in new_original
    assert vhost(ch) == expected_applied(new_original)
    assert vhost_state(ch) == "applied"
    # The stand-in kept our applied vhost as a timestamped copy (not loaded: sites-available, not enabled).
    saved = [p for p in os.listdir(ch.path("/etc/apache2/sites-available")) if re.fullmatch(r"cn-ssl\.conf\.\d{14}", p)]
    assert len(saved) == 1 and ch.read_bytes(f"/etc/apache2/sites-available/{saved[0]}") == applied_10
    assert_live_applied(ch)


def test_upgrade_of_both_in_one_apt_run(ch: C.Chroot, debs: Debs) -> None:
    """`apt upgrade` with new versions of both (a CN's unattended upgrade).  dpkg.log: unpack
    dataone-cn-os-core 1.1 (our trigger becomes pending), unpack ours, configure ours (this consumes the
    pending trigger, on the old vhost), configure dataone-cn-os-core (rewrites the vhost); then our trigger
    must run again (Debian 13's dpkg re-activates it; on Debian 12 our postinst's own trigger does)."""
    original = with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    ch.publish([debs.ours_up, debs.standin_11])
    r = apt_ok(ch, "upgrade")
    assert ch.dpkg_status(OURS).endswith(debs.version_up) and ch.dpkg_status(STANDIN).endswith("1.1"), r
    assert_trigger_after_standin(r, "1.1")
    assert vhost(ch) == expected_applied(_filled(ch, ch.read_bytes(TEMPLATE))), r
    assert vhost(ch) != expected_applied(original)
    assert_live_applied(ch)


def test_standin_upgrade_to_a_template_with_the_policy_inline_is_superseded(ch: C.Chroot, debs: Debs) -> None:
    """A future dataone-cn-os-core carries the target block itself: the trigger finds nothing to do."""
    with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    ch.publish([debs.ours, debs.standin_12_superseded])
    r = apt_ok(ch, "upgrade")
    assert "superseded" in r.output, r
    assert vhost(ch) == _filled(ch, ch.read_bytes(TEMPLATE)), "the superseded vhost was edited"
    assert vhost_state(ch) == "superseded"
    assert_live_applied(ch)
    before = vhost(ch)
    apt_ok(ch, "remove", OURS)
    assert vhost(ch) == before


def test_operator_edit_of_the_snippet_survives_upgrades(ch: C.Chroot, debs: Debs) -> None:
    """The snippet is a dpkg conffile: `|julia` added by the operator stays, with --force-confold, both when
    upstream did not change it and when it did (the new one lands as .dpkg-dist).  The first upgrade after
    the edit finds the snippet changed since the last reload and reloads; the second finds it unchanged."""
    with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    r = live(ch, EXEMPT_UA)
    assert r.asked, f"the Julia client is asked before the operator's edit: {r}"

    edited = ch.read_bytes(SNIPPET).replace(b"|webkit)/i", b"|webkit|julia)/i")
    assert b"julia)/i" in edited
    ch.write(SNIPPET, edited)  # and no reload: the upgrade's postinst notices the snippet changed

    for deb, version, reload in ((debs.ours_up, debs.version_up, True), (debs.ours_up_conf, debs.version_up_conf, False)):
        ch.publish([debs.standin_10, deb])
        gens = graceful_count(ch)
        r = apt_ok(ch, "upgrade")
        assert ch.dpkg_status(OURS).endswith(version), r
        assert ch.read_bytes(SNIPPET) == edited, f"the operator's snippet was replaced by {version}:\n{r}"
        assert (graceful_count(ch) > gens) == reload, f"reload expected: {reload}\n{r}"
        assert_live_applied(ch, extra_browser_uas=(EXEMPT_UA,))
    dist = ch.read_bytes(SNIPPET + ".dpkg-dist")
    assert b"upstream changed this line" in dist and b"|webkit|julia)/i" not in dist


def test_operator_apply_after_editing_the_snippet_makes_it_live(ch: C.Chroot, debs: Debs) -> None:
    """The snippet's own header says: after editing, run `dataone-cn-sslverify apply` (config test, graceful
    reload, live check).  The vhost already includes the snippet, so only a reload makes the edit live."""
    with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    assert b"dataone-cn-sslverify apply" in ch.read_bytes(SNIPPET)
    ch.write(SNIPPET, ch.read_bytes(SNIPPET).replace(b"|webkit)/i", b"|webkit|julia)/i"))
    r = ch.run([OURS, "apply"])
    assert r.ok, r
    after = live(ch, EXEMPT_UA)
    assert not after.asked, f"`{OURS} apply` after editing the snippet did not make the edit live:\n{r}\n{after}"


def test_apply_failure_in_postinst_keeps_the_old_config_and_configure_a_recovers(ch: C.Chroot, debs: Debs) -> None:
    """Our own failure, from a real cause: the reload of our change fails (the host's policy-rc.d answers with an
    error the first time, so invoke-rc.d exits 102).  Rolled back, the previous vhost live, postinst fails so apt
    reports it; `dpkg --configure -a` then applies.  A snippet outside the policy's contract, by contrast, is
    refused before anything is tried: reported, postinst succeeds (test_maint)."""
    original = with_standin(ch, debs, debs.ours)
    calls = "/var/tmp/policy-rc.d-calls"
    ch.write("/usr/sbin/policy-rc.d", "#!/bin/sh\n# lifecycle test: an error (not a denial) on the first call\n"
             f"n=$(( $(cat {calls} 2>/dev/null || echo 0) + 1 )); echo $n > {calls}\n"
             "[ \"$n\" -gt 1 ] || exit 7\nexit 0\n", 0o755)

    r = ch.apt("install", OURS)
    assert not r.ok, f"apt did not report the failed apply:\n{r}"
    assert "rolled back" in r.output and "dpkg --configure -a" in r.output, r
    assert vhost(ch) == original, "the previous vhost was not restored"
    assert ch.run(["apache2ctl", "configtest"]).ok
    assert_live_original(ch)
    assert not ch.dpkg_status(OURS).startswith("install ok installed"), ch.dpkg_status(OURS)

    r = ch.run(["dpkg", "--configure", "-a"])
    assert r.ok, r
    assert ch.dpkg_status(OURS).startswith("install ok installed")
    assert vhost(ch) == expected_applied(original)
    assert_live_applied(ch)


def test_remove_restores_the_vhost_bytes_and_apache_keeps_serving(ch: C.Chroot, debs: Debs) -> None:
    original = with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    assert vhost(ch) == expected_applied(original)
    r = apt_ok(ch, "remove", OURS)
    assert vhost(ch) == original, r
    assert ch.apache_pid() is not None
    assert_live_original(ch)
    assert ch.exists(SNIPPET), "remove (not purge) keeps the conffile"


def test_purge_leaves_no_file_of_ours(ch: C.Chroot, debs: Debs) -> None:
    original = with_standin(ch, debs, debs.ours)
    before = _snapshot(ch)
    apt_ok(ch, "install", OURS)
    assert ch.exists(STATE_DIR) and ch.exists(SNIPPET)
    r = apt_ok(ch, "purge", OURS)
    assert vhost(ch) == original, r
    after = _snapshot(ch)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert (added, removed, changed) == ([], [], []), f"added {added}\nremoved {removed}\nchanged {changed}\n{r}"
    assert_live_original(ch)


def test_install_with_apache_stopped_does_not_start_it(ch: C.Chroot, debs: Debs) -> None:
    original = with_standin(ch, debs, debs.ours)
    ch.apache_stop()
    r = apt_ok(ch, "install", OURS)
    assert vhost(ch) == expected_applied(original), r
    assert ch.apache_pid() is None, "the postinst started a stopped Apache"
    assert "next start" in r.output, r
    ch.apache_start()
    assert_live_applied(ch)


def test_policy_rc_d_denying_means_no_reload_and_no_failure(ch: C.Chroot, debs: Debs) -> None:
    original = with_standin(ch, debs, debs.ours)
    procs, gens = ch.apache_processes(), graceful_count(ch)
    ch.set_policy_rc(allow=False)
    r = apt_ok(ch, "install", OURS)
    assert vhost(ch) == expected_applied(original), r
    assert "policy-rc.d denied reload of apache2 (invoke-rc.d exit 101)" in r.output, r
    assert ch.apache_processes() == procs and graceful_count(ch) == gens, f"Apache was reloaded:\n{r}"
    assert_live_original(ch)  # written and tested, not yet live
    ch.set_policy_rc(allow=True)
    ch.check(["apache2ctl", "graceful"])
    wait_for(lambda: graceful_count(ch) > gens, "a new Apache generation after `apache2ctl graceful`")
    assert_live_applied(ch)


def test_optout_survives_an_upgrade_a_reinstall_and_the_trigger(ch: C.Chroot, debs: Debs) -> None:
    """`dataone-cn-sslverify revert` by hand is the administrator's decision: an upgrade of ours, of
    dataone-cn-os-core (our trigger) and `apt-get install --reinstall` leave the vhost alone, each saying so in
    one line; `apply` by hand clears it."""
    original = with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    r = ch.run([OURS, "revert"], env={"SUDO_USER": "alice"})
    assert r.ok and "opt-out: recorded" in r.stderr, r
    assert vhost(ch) == original
    assert status_json(ch)["optout"]["disabled_by"] == "alice"

    ch.publish([debs.ours_up, debs.standin_11])
    r = apt_ok(ch, "upgrade")
    assert ch.dpkg_status(OURS).endswith(debs.version_up) and ch.dpkg_status(STANDIN).endswith("1.1"), r
    said = [ln for ln in r.output.splitlines() if "disabled by the administrator (alice" in ln]
    assert len(said) >= 2, f"configure and the trigger should each say so:\n{r}"
    assert "postinst triggered" in r.output[r.output.rfind(f"Processing triggers for {OURS}"):], r
    new_original = _filled(ch, ch.read_bytes(TEMPLATE))
    assert vhost(ch) == new_original, "the upgrade undid the administrator's revert"
    r = apt_ok(ch, "install", "--reinstall", OURS)
    assert "disabled by the administrator (alice" in r.output, r
    assert vhost(ch) == new_original, "the reinstall undid the administrator's revert"
    assert_live_original(ch)

    r = ch.run([OURS, "apply"])
    assert r.ok and "opt-out: cleared" in r.stderr, r
    assert vhost(ch) == expected_applied(new_original) and status_json(ch)["optout"] is None
    assert_live_applied(ch)


def test_remove_with_an_unrelated_broken_conf_file_succeeds(ch: C.Chroot, debs: Debs) -> None:
    """Someone else's broken conf file never blocks our removal: the original block goes back on disk,
    Apache is not reloaded (it would fail), the script says so and exits 0."""
    original = with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    ch.write("/etc/apache2/conf-enabled/zz-local.conf", "# an administrator's half-done edit\nThisIsNotADirective on\n")
    pid, gens = ch.apache_pid(), graceful_count(ch)
    r = apt_ok(ch, "remove", OURS)
    assert ch.dpkg_status(OURS).startswith("deinstall ok config-files"), r
    assert vhost(ch) == original, f"the original block is not back on disk:\n{r}"
    assert "Apache was not reloaded" in r.output and "zz-local.conf:2" in r.output, r
    assert ch.apache_pid() == pid and graceful_count(ch) == gens, "Apache was reloaded with a broken configuration"
    assert_live_applied(ch)  # what Apache loaded before; the snippet (a conffile) stays until purge
    ch.check(["rm", "/etc/apache2/conf-enabled/zz-local.conf"])
    ch.check(["apache2ctl", "graceful"])
    wait_for(lambda: graceful_count(ch) > gens, "a new Apache generation after `apache2ctl graceful`")
    assert_live_original(ch)


def test_configure_with_a_config_broken_by_someone_else_succeeds(ch: C.Chroot, debs: Debs) -> None:
    """Installing into a host whose configuration is already broken: reported with FILE:LINE, nothing done, exit 0;
    `status` says "not applied: configuration broken by FILE:LINE"."""
    original = with_standin(ch, debs)
    ch.write("/etc/apache2/conf-enabled/zz-local.conf", "# an administrator's half-done edit\nThisIsNotADirective on\n")
    ch.publish([debs.ours, debs.standin_10])
    r = apt_ok(ch, "install", OURS)
    assert "nothing was done: not applied: configuration broken by /etc/apache2/conf-enabled/zz-local.conf:2" in r.output, r
    assert vhost(ch) == original
    st = ch.run([OURS, "status"])
    assert "not applied: configuration broken by /etc/apache2/conf-enabled/zz-local.conf:2" in st.stderr, st


def test_reconfigure_of_the_standin_is_drift_that_status_names(ch: C.Chroot, debs: Debs) -> None:
    """`dpkg-reconfigure dataone-cn-os-core` copies the template over our applied vhost without unpacking it: no
    trigger fires (documented); `status` names the drift and `apply` puts the policy back."""
    original = with_standin(ch, debs, debs.ours)
    apt_ok(ch, "install", OURS)
    assert vhost(ch) == expected_applied(original)
    r = ch.run(["dpkg-reconfigure", STANDIN], merge=True)
    assert r.ok and "dataone-cn-os-core: wrote" in r.stdout, r
    assert vhost(ch) == original, "the stand-in did not rewrite the vhost on reconfigure"
    assert f"Processing triggers for {OURS}" not in r.stdout
    st = ch.run([OURS, "status"])
    assert "drift: /etc/apache2/sites-available/cn-ssl.conf no longer carries the policy" in st.stderr, st
    assert f"run `{OURS} apply`" in st.stderr
    assert ch.run([OURS, "apply"]).ok
    assert vhost(ch) == expected_applied(original) and "drift" not in ch.run([OURS, "status"]).stderr


def test_piuparts(suite: str, base_tree: Path, debs: Debs, tmp_path: Path) -> None:
    """`make piuparts` (scripts/run-piuparts): install+purge, install-remove-install, upgrade to self, with
    piuparts' own policy-rc.d denying service actions, --pedantic-purge-test.  ~25 s; needs the Debian mirror."""
    apt_ensure("piuparts")
    log = tmp_path / "piuparts.log"
    p = subprocess.run(["sh", str(REPO_ROOT / "scripts" / "run-piuparts"), str(debs.ours)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env={"PATH": C.SYSTEM_PATH, "HOME": "/root", "PIUPARTS_LOG": str(log),
                                                      "DATAONE_CN_SSLVERIFY_CHROOT_SUITE": suite},
                       timeout=900)
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = "\n".join(text.splitlines()[-60:])
    assert p.returncode == 0, f"piuparts failed:\n{p.stdout.decode(errors='replace')[-3000:]}\n{tail}"
    for phase in ("PASS: Installation and purging test.", "PASS: Installation, upgrade and purging tests.",
                  "PASS: All tests."):
        assert phase in text, f"{phase!r} missing from the piuparts log:\n{tail}"


# ----------------------------------------------------------------------------- filesystem snapshot

#: apt/dpkg bookkeeping, logs, caches, runtime and kernel trees: not files of any package.
_IGNORED = ("proc", "dev", "sys", "run", "tmp", "var/tmp", "var/log", "var/cache/apt", "var/lib/apt", "var/lib/dpkg",
            "var/cache/debconf", "var/cache/ldconfig", "srv/localrepo", "var/lib/systemd/deb-systemd-helper-enabled")


def _snapshot(ch: C.Chroot) -> Dict[str, Tuple[str, int, int, int, str]]:
    """path -> (type, mode, uid, gid, sha256 or link target) for every file outside bookkeeping."""
    out: Dict[str, Tuple[str, int, int, int, str]] = {}
    root = str(ch.root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in _IGNORED]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                kind, extra = "l", os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                kind, extra = "d", ""
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    kind, extra = "f", hashlib.sha256(f.read()).hexdigest()
            else:
                kind, extra = "o", ""
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra)
    return out


def _listing(ch: C.Chroot, inside: str) -> List[Tuple[str, str]]:
    base = ch.path(inside)
    out = []
    for dirpath, dirnames, filenames in os.walk(str(base)):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out.append((os.path.relpath(p, str(base)), hashlib.sha256(f.read()).hexdigest()))
    return sorted(out)
