"""The maintainer-script entry points (dataone_cn_sslverify.maint) against a real Apache.

Runs ``dataone-cn-sslverify maintscript postinst|prerm ...`` (as
``python3 -m dataone_cn_sslverify``) exactly as the .deb's scripts do, with a
throwaway Apache instance (tests/harness) in ``APACHE_CONFDIR``. Service
actions go through the host's real ``invoke-rc.d`` and Apache's init script
(which honours ``APACHE_CONFDIR``); ``DPKG_ROOT`` points invoke-rc.d at a
policy-rc.d of the test's (exit 0 or 101), the way dpkg does for a root
elsewhere. The dpkg side (install, upgrade, triggers, purge in a chroot) is
the lifecycle suite's job; this checks the decisions.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataone_cn_sslverify import maint  # noqa: E402

pytestmark = [pytest.mark.package]

IE11 = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"
CURL = "curl/7.88.1"
BEGIN = b"# dataone-cn-sslverify: begin"


class Maint:
    """Run the entry point for one instance, with a policy-rc.d that says yes or no."""

    def __init__(self, inst, tmp: Path) -> None:  # type: ignore[no-untyped-def]
        self.inst = inst
        self.roots: Dict[int, str] = {}
        for rc in (0, 101):
            root = tmp / f"dpkg-root-{rc}"
            (root / "usr" / "sbin").mkdir(parents=True)
            p = root / "usr" / "sbin" / "policy-rc.d"
            p.write_text(f"#!/bin/sh\nexit {rc}\n")
            p.chmod(0o755)
            self.roots[rc] = str(root)

    def __call__(self, *args: str, allow: bool = True, extra_env: Optional[Dict[str, str]] = None,
                 path_prefix: Optional[Path] = None) -> subprocess.CompletedProcess:
        env = self.inst.env()
        env["DPKG_ROOT"] = self.roots[0 if allow else 101]
        env["PYTHONPATH"] = str(ROOT)
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}:{env['PATH']}"
        env.update(extra_env or {})
        # As the scripts do (the command), from the source tree under test.
        p = subprocess.run(["/usr/bin/python3", "-B", "-m", "dataone_cn_sslverify", "maintscript", *args], env=env,
                           cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        p.stdout = p.stdout.decode("utf-8", "replace")
        print(f"--- maint {' '.join(args)} (exit {p.returncode})\n{p.stdout}")
        return p


@pytest.fixture
def run(apache, tmp_path: Path) -> Maint:  # type: ignore[no-untyped-def]
    return Maint(apache, tmp_path)


def asked(inst, ua: str) -> Optional[bool]:  # type: ignore[no-untyped-def]
    return inst.request("/cn/", user_agent=ua, tls="1.2").cert_requested


def generations(inst) -> int:  # type: ignore[no-untyped-def]
    return inst.error_log().count("resuming normal operations")


def test_configure_applies_and_remove_reverts_byte_identical(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    original = apache.vhost_bytes()
    assert asked(apache, IE11) is True
    p = run("postinst", "configure")
    assert p.returncode == 0
    assert BEGIN in apache.vhost_bytes()
    assert asked(apache, IE11) is False and asked(apache, CURL) is True
    p = run("prerm", "remove")
    assert p.returncode == 0
    assert apache.vhost_bytes() == original
    assert asked(apache, IE11) is True


def test_upgrade_reloads_only_when_the_snippet_changed(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    assert run("postinst", "configure").returncode == 0
    applied, gens = apache.vhost_bytes(), generations(apache)
    p = run("postinst", "configure", "0.1.0-1")
    assert p.returncode == 0 and "nothing to do" in p.stdout
    assert apache.vhost_bytes() == applied and generations(apache) == gens, "reloaded without a change"
    # The conffile changed (a new version, or the operator's edit): one graceful reload.
    with open(apache.policy_path, "a") as f:
        f.write("# local edit\n")
    p = run("postinst", "configure", "0.1.0-1")
    assert p.returncode == 0 and "was edited since it was last loaded" in p.stdout and "apply: changed" in p.stdout
    assert apache.vhost_bytes() == applied
    assert generations(apache) > gens
    gens = generations(apache)
    assert run("postinst", "triggered", "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf").returncode == 0
    assert generations(apache) == gens


def test_trigger_reapplies_after_the_vhost_was_rewritten(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    assert run("postinst", "configure").returncode == 0
    apache.write_vhost(apache.rendered_vhost())  # what dataone-cn-os-core's postinst does
    apache.graceful()
    assert asked(apache, IE11) is True
    p = run("postinst", "triggered", "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf")
    assert p.returncode == 0
    assert BEGIN in apache.vhost_bytes() and asked(apache, IE11) is False


@pytest.mark.parametrize("apache", ["browser-list"], indirect=True)
def test_superseded_vhost_is_left_alone(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    before = apache.vhost_bytes()
    p = run("postinst", "triggered", "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf")
    assert p.returncode == 0 and "superseded" in p.stdout
    assert apache.vhost_bytes() == before


def test_policy_rc_d_forbids_reload(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    gens = generations(apache)
    p = run("postinst", "configure", allow=False)
    assert p.returncode == 0
    assert BEGIN in apache.vhost_bytes()
    assert generations(apache) == gens and asked(apache, IE11) is True, "reloaded although policy-rc.d said no"
    assert "policy-rc.d denied reload of apache2" in p.stdout and "next reloaded or started" in p.stdout
    assert apache.configtest().ok
    p = run("prerm", "remove", allow=False)  # the removal too: the block back on disk, no reload, exit 0
    assert p.returncode == 0 and "policy-rc.d denied reload of apache2" in p.stdout, p.stdout
    assert apache.vhost_bytes() == apache.rendered_vhost() and generations(apache) == gens


def test_apache_stopped_is_not_started(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    apache.stop()
    p = run("postinst", "configure")
    assert p.returncode == 0 and BEGIN in apache.vhost_bytes()
    assert not apache.processes(), "the maintainer script started Apache"
    assert "next start" in p.stdout


def test_no_vhost_is_a_note(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    os.unlink(apache.vhost_link)
    p = run("postinst", "configure")
    assert p.returncode == 0 and "no CN SSL vhost" in p.stdout


def flaky_policy_rc_d(tmp_path: Path, failures: int) -> Path:
    """A DPKG_ROOT whose policy-rc.d exits 7 (an error, not a denial) the first `failures` times: invoke-rc.d
    then fails the reload (exit 102), a real failure of our change's reload step."""
    root = tmp_path / "dpkg-root-flaky"
    (root / "usr" / "sbin").mkdir(parents=True)
    counter = tmp_path / "policy-rc.d-calls"
    helper = root / "usr" / "sbin" / "policy-rc.d"
    helper.write_text(f"#!/bin/sh\nn=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}\n"
                      f"[ \"$n\" -gt {failures} ] || exit 7\nexit 0\n")
    helper.chmod(0o755)
    return root


def test_apply_failure_fails_postinst_and_a_retry_recovers(apache, run: Maint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Our own failure: the reload of our change fails (invoke-rc.d exits 1); rolled back, exit 1; a retry works."""
    original = apache.vhost_bytes()
    root = flaky_policy_rc_d(tmp_path, failures=1)
    p = run("postinst", "configure", extra_env={"DPKG_ROOT": str(root)})
    assert p.returncode == 1, "postinst must fail so that apt reports it"
    assert "rolled back" in p.stdout and "dpkg --configure -a" in p.stdout
    assert apache.vhost_bytes() == original and asked(apache, IE11) is True
    p = run("postinst", "configure", extra_env={"DPKG_ROOT": str(root)})  # dpkg --configure -a, cause gone
    assert p.returncode == 0 and BEGIN in apache.vhost_bytes()


def test_a_snippet_outside_the_contract_is_reported_not_failed(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    """Nothing of ours was tried: the edited snippet is refused up front, the script says so and succeeds."""
    original = apache.vhost_bytes()
    Path(apache.policy_path).write_bytes(Path(apache.policy_path).read_bytes() + b"SSLVerifyDepthh 3\n")
    p = run("postinst", "configure")
    assert p.returncode == 0 and "the policy snippet cannot be used" in p.stdout and "Nothing was done" in p.stdout
    assert apache.vhost_bytes() == original


BROKEN_CONF = "# someone else's file\nThisIsNotADirective on\n"


def test_config_broken_by_someone_else_is_reported_not_inherited(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    """An unrelated conf file fails configtest: configure and the trigger say so, change nothing, exit 0."""
    original = apache.vhost_bytes()
    apache.enable_conf("zz-broken", BROKEN_CONF)
    for args in (("postinst", "configure"), ("postinst", "triggered", "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf")):
        p = run(*args)
        assert p.returncode == 0, p.stdout
        assert re.search(r"not applied: configuration broken by \S*/conf-enabled/zz-broken\.conf:2 ", p.stdout), p.stdout
        assert "nothing was done" in p.stdout
        assert apache.vhost_bytes() == original
    status = subprocess.run(["/usr/bin/python3", "-B", "-m", "dataone_cn_sslverify", "status"], env=run_env(apache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert "not applied: configuration broken by " in status.stdout and ":2 " in status.stdout, status.stdout


def test_remove_with_an_unrelated_broken_conf_puts_the_block_back_and_succeeds(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    original = apache.vhost_bytes()
    assert run("postinst", "configure").returncode == 0
    assert asked(apache, IE11) is False
    apache.enable_conf("zz-broken", BROKEN_CONF)
    p = run("prerm", "remove")
    assert p.returncode == 0, p.stdout
    assert apache.vhost_bytes() == original, "the original block is not back on disk"
    assert "Apache was not reloaded" in p.stdout and "next reload or start" in p.stdout
    assert asked(apache, IE11) is False, "Apache was reloaded with a broken configuration"
    assert not list((apache.state_dir / "blocks").iterdir())


def test_remove_without_a_saved_block_never_blocks_the_removal(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    assert run("postinst", "configure").returncode == 0
    for f in (apache.state_dir / "blocks").iterdir():  # the saved original block is gone
        f.unlink()
    applied = apache.vhost_bytes()
    p = run("prerm", "remove")
    assert p.returncode == 0 and "Revert it by hand before purging" in p.stdout, p.stdout
    assert apache.vhost_bytes() == applied  # nothing we could trust to write


def test_revert_by_hand_is_an_opt_out_until_apply(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    original = apache.vhost_bytes()
    assert run("postinst", "configure").returncode == 0
    env = dict(run_env(apache), SUDO_USER="alice")
    cli = ["/usr/bin/python3", "-B", "-m", "dataone_cn_sslverify"]
    r = subprocess.run(cli + ["revert"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    assert r.returncode == 0 and "opt-out: recorded" in r.stdout, r.stdout
    assert apache.vhost_bytes() == original
    for args in (("postinst", "configure", "0.1.0-1"), ("postinst", "configure"),
                 ("postinst", "triggered", "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf dataone-cn-sslverify-reapply")):
        p = run(*args)
        assert p.returncode == 0 and "disabled by the administrator (alice, " in p.stdout, p.stdout
        assert len([ln for ln in p.stdout.splitlines() if ln.startswith("dataone-cn-sslverify:")]) == 1, p.stdout
        assert apache.vhost_bytes() == original
    doc = json.loads(subprocess.run(cli + ["--json", "status"], env=env, stdout=subprocess.PIPE,
                                    universal_newlines=True).stdout)
    assert doc["optout"]["disabled_by"] == "alice" and doc["optout"]["vhost"], doc
    r = subprocess.run(cli + ["apply"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    assert r.returncode == 0 and "opt-out: cleared" in r.stdout, r.stdout
    doc = json.loads(subprocess.run(cli + ["--json", "status"], env=env, stdout=subprocess.PIPE,
                                    universal_newlines=True).stdout)
    assert doc["optout"] is None
    apache.write_vhost(original)  # what `dpkg-reconfigure dataone-cn-os-core` does to the vhost
    r = subprocess.run(cli + ["status"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    assert "drift: " in r.stdout and "dataone-cn-sslverify apply" in r.stdout, r.stdout


def run_env(apache) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    env = apache.env()
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_remove_without_our_block_is_a_no_op(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    before = apache.vhost_bytes()
    p = run("prerm", "remove")
    assert p.returncode == 0 and apache.vhost_bytes() == before


# --- pieces without Apache ---------------------------------------------------


def test_conffile_of_another_package_is_recognised(tmp_path: Path) -> None:
    owned = subprocess.run(["dpkg-query", "-W", "-f", "${Conffiles}\n", "apache2"], stdout=subprocess.PIPE,
                           check=True).stdout.decode().split()
    conffile = next(f for f in owned if f.startswith("/etc/apache2/"))
    assert maint.conffile_owner(conffile) == "apache2"
    plain = tmp_path / "cn-ssl.conf"
    plain.write_text("# not owned by any package\n")
    assert maint.conffile_owner(str(plain)) is None
    assert maint.conffile_owner("/usr/sbin/apache2ctl") is None  # owned, but not a conffile


def test_dispatch() -> None:
    for args in (["postinst", "abort-upgrade", "0.1.0-1"], ["postinst", "abort-remove"], ["prerm", "upgrade", "0.2"],
                 ["prerm", "deconfigure", "in-favour", "x", "1"], ["prerm", "failed-upgrade", "0.1"]):
        assert maint.main(args) == 0, args
    assert maint.main([]) == 2
    assert maint.main(["postrm", "purge"]) == 2  # postrm is sh: never routed here
