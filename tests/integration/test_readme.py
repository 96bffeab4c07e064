"""Every read-only command form the README shows, run for real against a real Apache.

The forms come from README.md itself (`harness.readme`); the placeholders
an operator fills in (``PEM``, ``before.json``) are filled with the
harness's client certificate and a matrix saved by an earlier form. Forms
that change the vhost (``apply``, ``revert``, ``restore``) are parsed in
tests/unit/test_cli.py and exercised by tests/integration/test_transaction.py.
"""

import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from harness import ApacheInstance
from harness.readme import readme_forms

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
READ_ONLY = ("status", "diff", "backups", "probe", "check")
#: The exit codes each command may give on a CN that carries the target policy (``browser-list``):
#: every probe form, ``--compare`` included, must pass; ``check`` may still name a hazard (TLS 1.3).
EXPECTED = {"status": {0}, "diff": {0}, "backups": {0}, "probe": {0}, "check": {0, 5}}


def _fill(argv: List[str], values: Dict[str, str]) -> List[str]:
    return [values.get(a, a) for a in argv]


@pytest.mark.parametrize("apache", ["browser-list"], indirect=True)
def test_every_read_only_readme_form_runs(apache: ApacheInstance, tmp_path: Path):
    forms = [(where, argv) for where, argv in readme_forms() if argv and argv[0] in READ_ONLY]
    assert {argv[0] for _, argv in forms} >= {"status", "diff", "probe", "check"}, forms
    before = tmp_path / "before.json"
    values = {"PEM": str(apache.pki.client_pem), "before.json": str(before)}
    vhost = apache.vhost_bytes()
    # a saved matrix first, as the README's own sequence does (probe --json ... > before.json)
    saved = subprocess.run([PYTHON, "-m", "dataone_cn_sslverify", "probe", "--json", "--cert", values["PEM"]],
                           env=apache.env(), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=300, check=False)
    assert saved.returncode == 0, saved.stderr.decode("latin-1")
    before.write_bytes(saved.stdout)
    failures = []
    for where, argv in forms:
        p = subprocess.run([PYTHON, "-m", "dataone_cn_sslverify"] + _fill(argv, values), env=apache.env(),
                           cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, check=False)
        if p.returncode not in EXPECTED[argv[0]]:
            failures.append("%s: dataone-cn-sslverify %s -> %d\n%s" % (
                where, " ".join(argv), p.returncode, p.stderr.decode("latin-1")[-2000:]))
    assert not failures, "\n\n".join(failures)
    assert apache.vhost_bytes() == vhost, "a read-only command changed the vhost"


def test_readme_sample_runs_are_what_the_command_prints(apache: ApacheInstance):
    """The README's sample session, rerun now: same lines once paths, ports, ids and pids are normalised."""
    import difflib

    from harness.readme_samples import README, SEQUENCE, masked, readme_samples, run_samples

    shown = readme_samples(README.read_text(encoding="utf-8"))
    assert sorted(shown) == sorted(name for name, _ in SEQUENCE), "README sample markers: %s" % sorted(shown)
    real = run_samples(apache)
    stale = []
    for name, _ in SEQUENCE:
        if masked(shown[name]) != masked(real[name]):
            stale.append("".join(difflib.unified_diff(masked(shown[name]).splitlines(True),
                                                      masked(real[name]).splitlines(True),
                                                      "README.md sample: " + name, "the command now")))
    assert not stale, "README samples are stale; rewrite them with `make readme-samples`:\n" + "\n".join(stale)
