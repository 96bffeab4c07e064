"""The Ansible fleet rollout (deploy/ansible/) against three CN "hosts": debootstrap chroots with Apache inside.

Each host is a ``chroot.Chroot`` (an overlay of the cached debootstrap tree in its own PID/mount/UTS
namespaces) with the stand-in ``dataone-cn-os-core`` installed from a local apt repository (so its
own CN vhost, its own Apache on its own free 127.0.0.1 port) and the same repository serving our
.deb.  Ansible reaches them through community.general's ``chroot`` connection (from Debian's
``ansible`` package, never Galaxy): ``ansible_host`` is the chroot's host view ``/proc/PID/root`` and
``ansible_chroot_exe`` a wrapper (``chroot.CHROOT_EXE_SH``) that ``nsenter``s that PID's
namespaces, because the overlay is only mounted inside the chroot's private mount namespace and
because Apache must live in the chroot's PID namespace.

Hosts, in rollout order: cn1 (webkit-only block), cn2 (a block the tool does not recognise: made to
fail on purpose), cn3 (webkit-only).  One test, four ansible-playbook runs:

1. ``rollout.yml --check --diff``: each host's diff printed, nothing changed anywhere, three entries.
2. ``rollout.yml`` (source apt): cn1 applied and live; cn2 fails the probe gate (the package's postinst
   refuses the unrecognised block and leaves it), the play reverts and removes the package: cn2's vhost
   bytes are the original ones; the rollout stops: cn3 untouched (bytes, no dpkg event of ours); the
   report has cn1 and cn2.
3. ``rollout.yml`` (source deb, the uploaded .deb) limited to cn3: applied.
4. ``rollback.yml``: cn1 and cn3 reverted byte for byte, gated, package removed; cn2 skipped.

Marked ``fleet`` (and ``package``); ``make test-fleet`` runs only this.  ~1-2 min once the chroot cache exists.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import chroot as C  # noqa: E402

pytestmark = [pytest.mark.fleet, pytest.mark.package]

REPO_ROOT = HERE.parents[1]
ANSIBLE_DIR = REPO_ROOT / "deploy" / "ansible"
OURS = "dataone-cn-sslverify"
STANDIN = "dataone-cn-os-core"
VHOST = "/etc/apache2/sites-available/cn-ssl.conf"
INCLUDE = "Include /etc/dataone/apache2/cn-sslverify.live.conf"
#: The ansible apt module needs python3-apt on the host (a CN has it; the minbase chroot does not).
PYTHON_APT = ("python3-apt", "python-apt-common", "distro-info-data")
HOSTS = ("cn1", "cn2", "cn3")
BROKEN = "cn2"


def _apt_ensure(*packages: str) -> None:
    p = subprocess.run(["sh", str(REPO_ROOT / "scripts" / "apt-ensure"), *packages], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env={"PATH": C.SYSTEM_PATH, "HOME": "/root"})
    assert p.returncode == 0, p.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory, our_deb: Path) -> Dict[str, Path]:
    _apt_ensure("debootstrap", "dpkg-dev", "curl", "ansible")
    out = tmp_path_factory.mktemp("fleet-debs")
    ours = our_deb
    # python3-apt for the chroots, from the Debian mirror, cached next to the chroot cache.
    cache = C.CACHE_DIR / "fleet-debs"
    cache.mkdir(parents=True, exist_ok=True)
    for name in PYTHON_APT:
        if not list(cache.glob(f"{name}_*.deb")):
            p = subprocess.run(["apt-get", "download", "-q", name], cwd=str(cache), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={"PATH": C.SYSTEM_PATH, "HOME": "/root"})
            assert p.returncode == 0, p.stdout.decode(errors="replace")
    d = {"ours": ours, "standin": C.build_standin("1.0", out)}
    for name in PYTHON_APT:
        d[name] = sorted(cache.glob(f"{name}_*.deb"))[-1]
    return d


@pytest.fixture(scope="module")
def fleet(debs: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, C.Chroot]]:
    parent = tmp_path_factory.mktemp("fleet")
    tree = C.base_tree("bookworm")
    hosts: Dict[str, C.Chroot] = {}
    try:
        for name in HOSTS:
            ch = C.Chroot(parent, tree)
            hosts[name] = ch
            C.prepare_cn(ch)
            ch.set_policy_rc(allow=True)
            ch.publish(list(debs.values()))
            r = ch.apt("install", f"{STANDIN}=1.0", *PYTHON_APT)
            assert r.ok, r
            ch.wait_apache(True)
            if name == BROKEN:  # a block the tool does not recognise: the rollout must stop here
                ch.write(VHOST, ch.read_bytes(VHOST).replace(b"/webkit/i", b"/gecko/i"))
                ch.check(["apache2ctl", "graceful"])
        yield hosts
    finally:
        for ch in hosts.values():
            if os.environ.get("DATAONE_CN_SSLVERIFY_KEEP_CHROOT"):
                sys.stderr.write(f"\n--- {ch.dir}: error.log ---\n{ch.error_log()[-2000:]}\n")
            ch.close(keep=bool(os.environ.get("DATAONE_CN_SSLVERIFY_KEEP_CHROOT")))


def playbook(tmp: Path, fleet: Dict[str, C.Chroot], name: str, *args: str) -> Tuple[subprocess.CompletedProcess, dict]:
    inv = tmp / "inventory.ini"
    inv.write_text(C.ansible_inventory(fleet, C.write_chroot_exe(tmp / "chroot-exe")))
    report = tmp / f"report-{name}-{int(time.monotonic() * 1e9)}.json"
    t0 = time.monotonic()
    p = subprocess.run(["ansible-playbook", "-i", str(inv), name, "-e", f"cn_sslverify_report={report}", *args],
                       cwd=str(ANSIBLE_DIR), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={"PATH": C.SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                            "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local")})
    out = p.stdout.decode(errors="replace")
    (tmp / f"ansible-{name}-{len(list(tmp.glob('ansible-*.log')))}.log").write_text(out)
    sys.stderr.write(f"\n=== ansible-playbook {name} {' '.join(args)}: exit {p.returncode}, "
                     f"{time.monotonic() - t0:.1f}s ===\n{out[-6000:]}\n")
    p.stdout = out
    doc = json.loads(report.read_text()) if report.exists() else {}
    return p, doc


def installed(ch: C.Chroot) -> bool:
    return ch.dpkg_status(OURS).startswith("install ok installed")


def entries(doc: dict) -> List[str]:
    return [h["host"] for h in doc.get("hosts", [])]


def test_rollout_stops_at_the_failing_host_and_rollback_reverts(fleet: Dict[str, C.Chroot], tmp_path: Path,
                                                               debs: Dict[str, Path]) -> None:
    original = {n: ch.read_bytes(VHOST) for n, ch in fleet.items()}
    dpkg_marks = {n: len(ch.dpkg_log()) for n, ch in fleet.items()}

    # 1. --check --diff: every host's diff shown, nothing changes.
    p, doc = playbook(tmp_path, fleet, "rollout.yml", "--check", "--diff")
    assert p.returncode == 0, p.stdout
    assert entries(doc) == list(HOSTS), doc
    assert p.stdout.count('"+\\t' + INCLUDE + '"') == 2, p.stdout  # cn1 and cn3: the diff, in the output
    assert "cn_sslverify-rollout" not in json.dumps([h["diff"] for h in doc["hosts"]])
    outcomes = {h["host"]: h["outcome"] for h in doc["hosts"]}
    assert outcomes == {"cn1": "would-change", "cn2": "would-refuse", "cn3": "would-change"}, outcomes
    for n, ch in fleet.items():
        assert ch.read_bytes(VHOST) == original[n], f"{n}: --check changed the vhost"
        assert not installed(ch), f"{n}: --check installed the package"
        assert not ch.exists("/var/tmp/dataone-cn-sslverify-rollout"), f"{n}: scratch dir left"

    # 2. The rollout (apt source): cn1 applied, cn2 fails and is put back, cn3 untouched.
    p, doc = playbook(tmp_path, fleet, "rollout.yml")
    assert p.returncode != 0, p.stdout
    assert entries(doc) == ["cn1", "cn2"], doc
    e1, e2 = doc["hosts"]
    assert e1["outcome"] == "applied" and e1["gate"]["verdict"]["ok"] and e1["gate"]["verdict"]["mode"] == "policy", e1
    assert e2["outcome"] == "failed" and e2["rollback"]["restored"] is True and e2["rollback"]["package_removed"], e2
    assert e2["gate"]["states"] == ["unrecognised"], e2["gate"]
    assert e2["rollback"]["revert_exit"] == 2, e2  # revert refuses the unrecognised block: nothing to undo

    cn1 = fleet["cn1"]
    assert installed(cn1)
    assert INCLUDE.encode() in cn1.read_bytes(VHOST) and b"/webkit/i" not in cn1.read_bytes(VHOST)
    r = C.live(cn1, C.IE11_UA)
    assert r.status == 200 and not r.asked, r
    r = C.live(cn1, C.CURL_UA)
    assert r.status == 200 and r.asked_post, r

    cn2 = fleet["cn2"]
    assert cn2.read_bytes(VHOST) == original["cn2"], "the failing host does not have its previous config"
    assert not installed(cn2)
    assert cn2.apache_pid() is not None

    cn3 = fleet["cn3"]
    assert cn3.read_bytes(VHOST) == original["cn3"], "a host after the failing one was changed"
    assert not installed(cn3)
    assert OURS not in cn3.dpkg_log()[dpkg_marks["cn3"]:], "a host after the failing one saw a dpkg event of ours"
    r = C.live(cn3, C.IE11_UA)
    assert r.status == 200 and r.asked_post, r  # still the original block, live

    # 3. The uploaded-.deb source, on the host the failed rollout never reached.
    p, doc = playbook(tmp_path, fleet, "rollout.yml", "--limit", "cn3", "-e", "cn_sslverify_source=deb",
                      "-e", f"cn_sslverify_deb={debs['ours']}")
    assert p.returncode == 0, p.stdout
    assert entries(doc) == ["cn3"] and doc["hosts"][0]["outcome"] == "applied", doc
    assert installed(cn3) and INCLUDE.encode() in cn3.read_bytes(VHOST)

    # 4. The rollback across the fleet, gated, one host at a time.
    p, doc = playbook(tmp_path, fleet, "rollback.yml")
    assert p.returncode == 0, p.stdout
    outcomes = {h["host"]: h["outcome"] for h in doc["hosts"]}
    assert outcomes == {"cn1": "reverted", "cn2": "not-installed", "cn3": "reverted"}, doc
    for n, ch in fleet.items():
        assert ch.read_bytes(VHOST) == original[n], f"{n}: rollback did not restore the original bytes"
        assert not installed(ch), n
    for n in ("cn1", "cn3"):
        assert doc["hosts"][HOSTS.index(n)]["gate"]["verdict"]["mode"] == "original", doc
        assert doc["hosts"][HOSTS.index(n)]["gate"]["verdict"]["ok"], doc
        r = C.live(fleet[n], C.IE11_UA)
        assert r.status == 200 and r.asked_post, r  # the original block is live again
