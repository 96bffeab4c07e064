"""The manual hotfix from a clone, without the package: `sudo ./dataone-cn-sslverify-from-clone apply`.

Run exactly as the README documents it: the script at the top of the
repository, from another working directory, with no PYTHONPATH, against a
real Apache whose policy file does not exist yet (no package installed).
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from harness import ApacheInstance
from transaction_support import CURL_UA, IE11, assert_applied_behaviour, assert_asked, assert_original_behaviour

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "dataone-cn-sslverify-from-clone"
SHIPPED_POLICY = REPO / "conf" / "cn-sslverify.conf"


def run(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT)] + list(args), env=env, cwd="/", stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180, check=False)


def clone_env(inst: ApacheInstance, policy: Path) -> Dict[str, str]:
    env = inst.env()
    env.pop("PYTHONPATH", None)
    env["DATAONE_CN_SSLVERIFY_POLICY"] = str(policy)  # stands for /etc/dataone/apache2/cn-sslverify.conf
    return env


def test_readme_documents_the_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "sudo ./dataone-cn-sslverify-from-clone apply" in readme
    assert os.access(str(SCRIPT), os.X_OK)


def test_apply_from_a_clone_creates_the_policy_file_and_applies(apache: ApacheInstance, tmp_path: Path):
    policy = tmp_path / "etc" / "dataone" / "apache2" / "cn-sslverify.conf"
    env = clone_env(apache, policy)

    status = run(env, "status", "--json")
    assert status.returncode == 0, status.stderr.decode()
    assert json.loads(status.stdout)["vhosts"][0]["state"] == "original:webkit-only"
    assert not policy.exists(), "a read-only command created the policy file"

    applied = run(env, "apply", "--json")
    err = applied.stderr.decode()
    assert applied.returncode == 0, err
    assert json.loads(applied.stdout)["result"] == "changed", applied.stdout.decode()
    assert "policy: %s created from %s" % (policy, SHIPPED_POLICY) in err
    assert policy.read_bytes() == SHIPPED_POLICY.read_bytes()
    assert oct(policy.stat().st_mode & 0o777) == oct(0o644)
    assert b"\tInclude %s\n" % str(policy.parent / "cn-sslverify.live.conf").encode() in apache.vhost_bytes()
    assert_applied_behaviour(apache)

    reverted = run(env, "revert")
    assert reverted.returncode == 0, reverted.stderr.decode()
    assert apache.vhost_bytes() == apache.rendered_vhost()
    assert_original_behaviour(apache)


def test_an_existing_policy_file_is_used_never_overwritten(apache: ApacheInstance, tmp_path: Path):
    policy = tmp_path / "cn-sslverify.conf"
    edited = SHIPPED_POLICY.read_bytes().replace(b"|webkit)/i", b"|webkit|julia)/i")
    assert edited != SHIPPED_POLICY.read_bytes()
    policy.write_bytes(edited)
    applied = run(clone_env(apache, policy), "apply")
    assert applied.returncode == 0, applied.stderr.decode()
    assert b"created from" not in applied.stderr
    assert policy.read_bytes() == edited
    assert_applied_behaviour(apache)
    assert_asked(apache, CURL_UA, "1.2")


def test_a_planted_symlink_is_not_written_through(apache: ApacheInstance, tmp_path: Path):
    policy = tmp_path / "cn-sslverify.conf"
    elsewhere = tmp_path / "elsewhere.conf"
    os.symlink(str(elsewhere), str(policy))  # dangling
    before = apache.vhost_bytes()
    applied = run(clone_env(apache, policy), "apply")
    assert applied.returncode == 2, applied.stderr.decode()
    assert not elsewhere.exists(), "the policy was written through a symlink"
    assert apache.vhost_bytes() == before
    assert_asked(apache, IE11, "1.2")
