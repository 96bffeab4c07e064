"""The installed package's monitoring plugins through a CN's day, in a Debian chroot with Apache running.

One chroot (``chroot.py``: an overlay of the cached debootstrap tree, Apache
on free loopback ports), the stand-in ``dataone-cn-os-core`` and our .deb
(the session ``our_deb`` fixture). The Check_MK local check and the Nagios
plugin are run as their agents run them, from the paths the package
installs, and their output is parsed with the formats' documented rules
(`harness.monitoring`):

install -> OK; ``dpkg-reconfigure dataone-cn-os-core`` (its postinst copies
the template over the vhost; no trigger fires) -> WARN naming
``dataone-cn-sslverify apply``; apply -> OK; a broken unrelated conf file ->
CRIT naming it; the administrator's ``revert`` -> OK "disabled by the
administrator".

Runs on the first suite of ``$DATAONE_CN_SSLVERIFY_LIFECYCLE_SUITES`` only
(the maintainer-script paths are covered on every suite by test_lifecycle.py;
this adds the plugins). Marked ``lifecycle`` and ``package``.
"""

import os
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import chroot as C  # noqa: E402
from harness.monitoring import parse_checkmk, parse_nagios  # noqa: E402

pytestmark = [pytest.mark.lifecycle, pytest.mark.package]

OURS = "dataone-cn-sslverify"
STANDIN = "dataone-cn-os-core"
LOCAL_CHECK = "/usr/lib/check_mk_agent/local/dataone_cn_sslverify"
NAGIOS_PLUGIN = "/usr/lib/nagios/plugins/check_dataone_cn_sslverify"
SUITE = os.environ.get("DATAONE_CN_SSLVERIFY_LIFECYCLE_SUITES", "bookworm").split()[0]
APPLY = "`dataone-cn-sslverify apply`"


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory, our_deb: Path) -> Iterator[C.Chroot]:
    """A chroot with the stand-in installed (Apache serving its vhost) and our package published."""
    out = tmp_path_factory.mktemp("monitor-debs")
    standin = C.build_standin("1.0", out)
    c = C.Chroot(tmp_path_factory.mktemp("monitor-chroot"), C.base_tree(SUITE))
    try:
        C.prepare_cn(c)
        c.set_policy_rc(allow=True)
        c.publish([our_deb, standin])
        r = c.apt("install", f"{STANDIN}=1.0")
        assert r.ok, r
        c.wait_apache(True)
        yield c
    except BaseException:
        sys.stderr.write(f"\n--- Apache error.log ---\n{c.error_log()[-3000:]}\n")
        raise
    finally:
        c.close()


def local_check(ch: C.Chroot) -> Tuple[int, dict, str]:
    """What the Check_MK agent gets from our local check: exactly one valid line, exit 0."""
    r = ch.run([LOCAL_CHECK])
    assert r.ok, r
    status, service, metrics, text = parse_checkmk(r.stdout)
    assert service == OURS, r
    return status, metrics, text


def plugin(ch: C.Chroot) -> Tuple[int, str]:
    r = ch.run([NAGIOS_PLUGIN])
    status, text, _ = parse_nagios(r.stdout, r.returncode)
    local = local_check(ch)
    assert (local[0], local[2]) == (r.returncode, text), "the two formats disagree"
    return r.returncode, text


def test_plugins_through_install_reconfigure_apply_breakage_and_revert(cn: C.Chroot) -> None:
    r = cn.apt("install", OURS)
    assert r.ok, r
    for p in (LOCAL_CHECK, NAGIOS_PLUGIN):
        assert os.stat(cn.path(p, follow=True)).st_mode & 0o777 == 0o755, p
    state, text = plugin(cn)
    assert state == 0 and text.startswith("policy live as /etc/dataone/apache2/cn-sslverify.conf says"), text
    status, metrics, _ = local_check(cn)
    assert metrics["browsers_asked"][0] == "0" and metrics["replication_open"][0] == "0"

    # dpkg-reconfigure: the stand-in's postinst puts the template back and restarts Apache; no trigger fires.
    r = cn.run(["dpkg-reconfigure", STANDIN], merge=True)
    assert r.ok and "dataone-cn-os-core: wrote" in r.output, r
    cn.wait_apache(True)
    assert C.live(cn, C.IE11_UA).asked, "after the reconfigure IE11 is asked again (the drift is real)"
    state, text = plugin(cn)
    assert state == 1 and text.startswith("drift:") and APPLY in text, text

    r = cn.run([OURS, "apply"])
    assert r.ok, r
    assert not C.live(cn, C.IE11_UA).asked
    state, text = plugin(cn)
    assert state == 0, text

    # Somebody else's broken conf file: CRIT, naming it; Apache keeps serving, nothing reloaded.
    cn.write("/etc/apache2/conf-available/zz-local.conf", "# a colleague's file\nBogusDirective on\n")
    cn.check(["a2enconf", "-q", "zz-local"])
    pid = cn.apache_pid()
    state, text = plugin(cn)
    assert state == 2 and "broken by /etc/apache2/conf-enabled/zz-local.conf:2" in text, text
    assert cn.apache_pid() == pid
    cn.check(["a2disconf", "-q", "zz-local"])
    assert plugin(cn)[0] == 0

    # The administrator's revert is a decision, not drift.
    r = cn.run([OURS, "revert"])
    assert r.ok, r
    state, text = plugin(cn)
    assert state == 0 and text.startswith("disabled by the administrator"), text
