"""`dataone-cn-sslverify monitor` against a real Apache 2.4 (tests/harness), as Check_MK and Nagios run it.

Each state is produced by real means (the tool's own apply, the original
vhost copied back the way dataone-cn-os-core's postinst does, a bogus
directive in an unrelated conf file, a Location added to the policy snippet
and a reload by someone else, a held lock, a SIGKILLed apply, a stopped
server) and where the monitor claims something about the server, a real
client shows it. The monitor itself must never write, reload or recover.
"""

import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from dataone_cn_sslverify.monitor_fast import RACY
from harness import ApacheInstance
from harness.monitoring import parse_checkmk, parse_nagios
from transaction_support import generations, journal_path, tool

pytestmark = pytest.mark.integration

REPLICATION = "/metacat/servlet/replication"


def nagios(inst: ApacheInstance, *extra: str) -> Tuple[int, str, Dict[str, List[str]]]:
    r = tool(inst, "monitor", *extra, as_json=False)
    status, text, perf = parse_nagios(r.stdout, r.code)
    assert r.stdout.count("\n") == 1, r
    return r.code, text, perf


def checkmk(inst: ApacheInstance, *extra: str) -> Tuple[int, Dict[str, List[str]], str]:
    r = tool(inst, "monitor", "--format", "checkmk", *extra, as_json=False)
    assert r.code == 0, r
    status, service, metrics, text = parse_checkmk(r.stdout)
    assert service == "dataone-cn-sslverify"
    return status, metrics, text


def snapshot(inst: ApacheInstance) -> Dict[str, bytes]:
    """Every file of the instance's configuration and the state dir (what monitor must never write)."""
    out = {}
    for top in (inst.confdir, inst.state_dir, inst.policy_path.parent):
        for dirpath, _, files in os.walk(str(top)):
            for fn in files:
                p = os.path.join(dirpath, fn)
                if fn not in ("monitor-live.json", "monitor-config.json", "monitor-verdict.cache"):  # its own caches
                    with open(p, "rb") as f:
                        out[p] = f.read()
    return out


def applied(inst: ApacheInstance) -> None:
    r = tool(inst, "apply")
    assert r.code == 0, r


def no_cert_status(inst: ApacheInstance, path: str) -> int:
    """What curl without a certificate gets on path (TLS 1.3 with PHA, then 1.2 renegotiation): 0 = refused."""
    return inst.request(path, user_agent="curl/7.88.1", tls="1.2").status


def test_ok_after_apply_drift_when_the_original_is_copied_back_then_ok_again(apache: ApacheInstance) -> None:
    applied(apache)
    before, gens = snapshot(apache), generations(apache)
    code, text, perf = nagios(apache)
    assert code == 0 and text.startswith("policy live as"), text
    assert perf["browsers_asked"] == ["0"] and perf["replication_open"][0] == "0"
    status, metrics, text2 = checkmk(apache)
    assert status == 0 and text2 == text and metrics["api_asked"][0] == perf["api_asked"][0]
    assert snapshot(apache) == before and generations(apache) == gens, "monitor wrote a file or reloaded Apache"

    # What dataone-cn-os-core's postinst does on `dpkg-reconfigure`: the template over the vhost, a restart.
    apache.write_vhost(apache.rendered_vhost())
    apache.stop()
    apache.start()
    code, text, _ = nagios(apache)
    assert code == 1 and text.startswith("drift:") and "`dataone-cn-sslverify apply`" in text, text
    r = apache.request("/cn/", user_agent="Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko")
    assert r.cert_requested, "the drift the monitor reports is real: IE11 is asked again"

    applied(apache)
    assert nagios(apache)[0] == 0


def test_live_ok_and_cached_in_the_state_dir(apache: ApacheInstance) -> None:
    applied(apache)
    status, metrics, text = checkmk(apache, "--live")
    assert status == 0, text
    assert metrics["browsers_asked"][0] == "0" and metrics["api_asked"][0] == "2" and metrics["replication_open"][0] == "0"
    cache = apache.state_dir / "monitor-live.json"
    st = os.lstat(str(cache))
    assert oct(st.st_mode & 0o777) == "0o600"
    status2, metrics2, _ = checkmk(apache, "--live")
    assert (status2, metrics2["api_asked"]) == (status, metrics["api_asked"])
    assert os.lstat(str(cache)).st_ino == st.st_ino, "a fresh cached verdict was probed again"
    status3, _, _ = checkmk(apache, "--live", "--cache", "0")
    assert status3 == 0 and os.lstat(str(cache)).st_ino == st.st_ino, "--cache 0 must neither read nor write it"


def test_broken_unrelated_conf_file_is_critical(apache: ApacheInstance) -> None:
    applied(apache)
    gens = generations(apache)
    apache.enable_conf("zz-broken", "# someone else's file\nThisIsNotADirective on\n")
    code, text, _ = nagios(apache)
    assert code == 2 and "broken by %s/conf-enabled/zz-broken.conf:2" % apache.confdir in text, text
    assert "`apache2ctl configtest`" in text
    assert apache.is_running() and generations(apache) == gens


def test_replication_opened_by_a_snippet_edit_is_critical(apache: ApacheInstance) -> None:
    applied(apache)
    assert no_cert_status(apache, REPLICATION) != 200
    time.sleep(RACY + 0.3)  # files written less than RACY seconds before a run are not cached (the racy rule)
    assert nagios(apache)[0] == 0 and (apache.state_dir / "monitor-config.json").exists()
    # The policy file itself is never loaded (its live copy is, and apply refuses such an edit):
    # the way left to open replication is a hand edit of the live copy.
    live = apache.policy_path.parent / "cn-sslverify.live.conf"
    text = live.read_text()
    live.write_text(text + '\n<Location "%s">\n    SSLVerifyClient none\n</Location>\n' % REPLICATION)
    r = apache.graceful()  # someone else's reload (logrotate does one)
    assert r.ok, r.output
    assert no_cert_status(apache, REPLICATION) == 200, "the snippet really opened replication"
    code, out, _ = nagios(apache)  # the cached analysis is stale (the snippet changed): not used
    assert code == 2 and "%s (" % REPLICATION in out and "accepts a client without a certificate" in out, out
    assert "%s:" % live in out and "`dataone-cn-sslverify apply`" in out
    code, out, perf = nagios(apache, "--live")
    assert code == 2 and "live: %s (200) answered a client without a certificate" % REPLICATION in out, out
    assert perf["replication_open"][0] == "1"


def test_webkit_if_else_original_leaves_replication_open(apache_instance_factory) -> None:
    """The 2015 block's vhost-level <If>/<Else> overrides replication's `require` (If sections merge last)."""
    inst = apache_instance_factory("webkit-if-else")
    inst.start()
    assert no_cert_status(inst, REPLICATION) == 200, "the claim is measured: no certificate, 200"
    code, text, perf = nagios(inst)
    assert code == 2 and "accepts a client without a certificate" in text and perf["replication_open"][0] == "1"
    assert "`dataone-cn-sslverify apply`" in text, text
    applied(inst)
    assert no_cert_status(inst, REPLICATION) != 200
    code, text, _ = nagios(inst, "--live")
    assert code == 0, text


def test_unknown_when_it_cannot_tell(apache: ApacheInstance, tmp_path: Path) -> None:
    # a block split in two places: unrecognised
    v = apache.vhost_bytes()
    apache.write_vhost(v.replace(b"\tSSLEngine on\n", b"\tSSLEngine on\n\tSSLVerifyClient optional\n", 1))
    code, text, _ = nagios(apache)
    assert code == 3 and "cannot tell" in text and "split" in text, text
    apache.write_vhost(v)
    applied(apache)
    # a run holds the lock (a real flock, as the tool takes it): said, not waited for
    holder = subprocess.Popen(["flock", "--no-fork", "-x", str(apache.state_dir / "lock"), "sleep", "30"])
    try:
        code, text, _ = nagios(apache)
        assert code == 3 and "in progress" in text, text
    finally:
        holder.kill()
        holder.wait()
    assert nagios(apache)[0] == 0
    # --live with Apache stopped: cannot verify on the wire
    apache.stop()
    code, text, _ = nagios(apache, "--live", "--cache", "0")
    assert code == 3 and "live check: cannot reach" in text and "`dataone-cn-sslverify probe`" in text, text


def test_interrupted_apply_is_critical_and_monitor_does_not_recover_it(apache: ApacheInstance) -> None:
    killed = tool(apache, "apply", extra_env={"DATAONE_CN_SSLVERIFY_FAILPOINT": "kill:reload"})
    assert killed.code == -9, killed
    left = apache.vhost_bytes()
    code, text, _ = nagios(apache)
    assert code == 2 and "journal" in text and "`dataone-cn-sslverify status`" in text, text
    assert journal_path(apache).exists() and apache.vhost_bytes() == left, "monitor recovered (it must only read)"
    assert tool(apache, "status").code == 0  # the command it names recovers
    assert not journal_path(apache).exists()
    code, text, _ = nagios(apache)
    assert code == 1 and "`dataone-cn-sslverify apply`" in text, text


def test_without_live_the_probe_stack_is_not_imported(apache: ApacheInstance) -> None:
    """It runs every minute: no ssl, no threads, no transaction unless --live measures (not when it is cached)."""
    applied(apache)
    code = ("import sys\nfrom dataone_cn_sslverify import cli\nrc = cli.main(sys.argv[1:])\n"
            "print(sorted(m for m in ('ssl', 'concurrent.futures', 'dataone_cn_sslverify.probe', "
            "'dataone_cn_sslverify.transaction') if m in sys.modules))\n")
    env = dict(apache.env(), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    probing = "['dataone_cn_sslverify.probe', 'ssl']"  # probe threads itself: no concurrent.futures
    for args, loaded in ((["monitor"], "[]"), (["monitor", "--live"], probing), (["monitor", "--live"], "[]")):
        p = subprocess.run(["/usr/bin/python3", "-c", code] + args, env=env, stdout=subprocess.PIPE, timeout=120)
        out = p.stdout.decode().splitlines()
        assert out[0].startswith("OK - ") and out[-1] == loaded, (args, out)


def test_an_edited_snippet_not_live_yet_warns_until_apply(apache: ApacheInstance) -> None:
    applied(apache)
    gens = generations(apache)
    apache.policy_path.write_bytes(apache.policy_path.read_bytes() + b"# the operator's note\n")
    code, text, _ = nagios(apache)
    assert code == 1 and "edited, not live yet" in text and "`dataone-cn-sslverify apply`" in text, text
    assert generations(apache) == gens
    applied(apache)
    code, text, _ = nagios(apache)
    assert code == 0, text
