"""The maintainer-script entry points (dataone_cn_sslverify.maint) against a real Apache.

Runs ``python3 -m dataone_cn_sslverify.maint postinst|prerm ...`` exactly as
the .deb's scripts do, with a throwaway Apache instance (tests/harness) in
``APACHE_CONFDIR`` and a stand-in policy-rc.d that allows or forbids service
actions (``DATAONE_CN_SSLVERIFY_POLICY_RC_D``; the host's own may forbid
everything, as in a container). The dpkg side (install, upgrade, triggers,
purge in a chroot) is the lifecycle suite's job; this checks the decisions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataone_cn_sslverify import apachectl, maint  # noqa: E402

pytestmark = [pytest.mark.package]

IE11 = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"
CURL = "curl/7.88.1"
BEGIN = b"# dataone-cn-sslverify: begin"


class Maint:
    """Run the entry point for one instance, with a policy-rc.d that says yes or no."""

    def __init__(self, inst, tmp: Path) -> None:  # type: ignore[no-untyped-def]
        self.inst = inst
        self.helpers: Dict[int, str] = {}
        for rc in (0, 101):
            p = tmp / f"policy-rc.d-{rc}"
            p.write_text(f"#!/bin/sh\nexit {rc}\n")
            p.chmod(0o755)
            self.helpers[rc] = str(p)

    def __call__(self, *args: str, allow: bool = True, extra_env: Optional[Dict[str, str]] = None,
                 path_prefix: Optional[Path] = None) -> subprocess.CompletedProcess:
        env = self.inst.env()
        env["DATAONE_CN_SSLVERIFY_POLICY_RC_D"] = self.helpers[0 if allow else 101]
        env["PYTHONPATH"] = str(ROOT)
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}:{env['PATH']}"
        env.update(extra_env or {})
        # As the scripts do, but -I would hide PYTHONPATH (the source tree under test).
        p = subprocess.run(["/usr/bin/python3", "-B", "-m", "dataone_cn_sslverify.maint", *args], env=env,
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
    assert "next (re)start" in p.stdout
    assert apache.configtest().ok


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


def _failing_graceful(root: Path, fail_first: int) -> Path:
    """An apache2ctl first on PATH that fails the first `fail_first` gracefuls (a real failing command)."""
    bindir = root / "failing-bin"
    bindir.mkdir(exist_ok=True)
    counter = root / "gracefuls"
    w = bindir / "apache2ctl"
    w.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = graceful ]; then\n'
        f'  n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}\n'
        f'  if [ "$n" -le {fail_first} ]; then echo "test: graceful #$n fails on purpose" >&2; exit 1; fi\n'
        "fi\n"
        'exec /usr/sbin/apache2ctl "$@"\n'
    )
    w.chmod(0o755)
    return bindir


def test_apply_failure_fails_postinst_and_a_retry_recovers(apache, run: Maint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = apache.vhost_bytes()
    bindir = _failing_graceful(tmp_path, fail_first=1)
    p = run("postinst", "configure", path_prefix=bindir)
    assert p.returncode == 1, "postinst must fail so that apt reports it"
    assert "rolled back" in p.stdout and "dpkg --configure -a" in p.stdout
    assert apache.vhost_bytes() == original and asked(apache, IE11) is True
    p = run("postinst", "configure", path_prefix=bindir)  # dpkg --configure -a, cause gone
    assert p.returncode == 0 and BEGIN in apache.vhost_bytes()


def test_failed_revert_stops_the_removal_unless_forced(apache, run: Maint) -> None:  # type: ignore[no-untyped-def]
    assert run("postinst", "configure").returncode == 0
    for f in (apache.state_dir / "blocks").iterdir():  # the saved original block is gone
        f.unlink()
    applied = apache.vhost_bytes()
    p = run("prerm", "remove")
    assert p.returncode == 1 and maint.FORCE_REMOVE_ENV in p.stdout
    assert apache.vhost_bytes() == applied
    p = run("prerm", "remove", extra_env={maint.FORCE_REMOVE_ENV: "1"})
    assert p.returncode == 0 and "removing anyway" in p.stdout


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


@pytest.mark.parametrize("rc,allowed", [(0, True), (1, True), (104, True), (105, True), (101, False), (106, False),
                                        (7, False)])
def test_policy_rc_d_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rc: int, allowed: bool) -> None:
    helper = tmp_path / "policy-rc.d"
    helper.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'apache2 reload' ] || exit 103\nexit {rc}\n")
    helper.chmod(0o755)
    monkeypatch.setenv("DATAONE_CN_SSLVERIFY_POLICY_RC_D", str(helper))
    ok, why = apachectl.service_action_allowed("reload", "apache2")
    assert ok is allowed, why
    monkeypatch.setenv("DATAONE_CN_SSLVERIFY_POLICY_RC_D", str(tmp_path / "missing"))
    assert apachectl.service_action_allowed("reload", "apache2")[0] is True


def test_dispatch() -> None:
    for args in (["postinst", "abort-upgrade", "0.1.0-1"], ["postinst", "abort-remove"], ["prerm", "upgrade", "0.2"],
                 ["prerm", "deconfigure", "in-favour", "x", "1"], ["prerm", "failed-upgrade", "0.1"]):
        assert maint.main(args) == 0, args
    assert maint.main([]) == 2
    assert maint.main(["postrm", "purge"]) == 2  # postrm is sh: never routed here
