"""The README's sample runs: produced by the real command, kept in step by a test.

A sample in README.md is a fenced block right after a marker line::

    <!-- sample: apply -->
    ```console
    $ dataone-cn-sslverify apply
    lock: /var/lib/dataone-cn-sslverify/lock
    ...
    ```

`run_samples` runs the operator's sequence (status, diff, apply, status,
revert) against a real Apache instance with the production ``webkit-only``
vhost and renders each run as such a block: the command line, then what
it printed (stderr, then stdout), with the instance's paths and port
replaced by a production host's (`normalise`). The test compares the README
with a fresh run after masking what differs from run to run (`masked`:
backup ids, pids, byte counts); ``python3 tests/harness/readme_samples.py``
(``make readme-samples``) rewrites the README's blocks from a fresh run.
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

if __name__ == "__main__":  # run as a script: make `harness` (tests/) and the package (the clone) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.instance import ApacheInstance  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PYTHON = "/usr/bin/python3"
PROG = "dataone-cn-sslverify"

#: (sample name, arguments), run in this order on one instance.
SEQUENCE: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("status", ("status",)),
    ("diff", ("diff",)),
    ("apply", ("apply",)),
    ("status-applied", ("status",)),
    ("revert", ("revert",)),
)

_MARKER = re.compile(r"^<!-- sample: ([a-z-]+) -->\n```console\n(.*?)^```$", re.M | re.S)

#: Run-to-run differences (applied to both sides before comparing).
_MASKS = (
    (re.compile(r"\d{8}T\d{6}_\d+"), "YYYYMMDDTHHMMSS_N"),
    (re.compile(r"\bpid \d+"), "pid N"),
    (re.compile(r"\b\d+ new children"), "N new children"),
    (re.compile(r"; \d+ old children still finishing requests"), ""),
    (re.compile(r"\(\d+ bytes, atomic\)"), "(N bytes, atomic)"),
    (re.compile(r"disabled by the administrator \([^,()]+, [0-9-]+ [0-9:]+ UTC"), "disabled by the administrator (USER, TIME UTC"),
)


def normalise(text: str, inst: ApacheInstance) -> str:
    """The instance's paths and port as they are on a production CN."""
    live = inst.policy_path.parent / "cn-sslverify.live.conf"
    for real, shown in ((str(live), "/etc/dataone/apache2/cn-sslverify.live.conf"),
                        (str(inst.policy_path), "/etc/dataone/apache2/cn-sslverify.conf"),
                        (str(inst.state_dir), "/var/lib/dataone-cn-sslverify"),
                        (str(inst.confdir), "/etc/apache2")):
        text = text.replace(real, shown)
    return re.sub(r":%d\b" % inst.https_port, ":443", text)


def masked(text: str) -> str:
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return text


def run_samples(inst: ApacheInstance) -> Dict[str, str]:
    """Each sample's block text, from real runs against inst (which must be running, unchanged)."""
    got: Dict[str, str] = {}
    for name, args in SEQUENCE:
        p = subprocess.run([PYTHON, "-m", "dataone_cn_sslverify"] + list(args), env=inst.env(), cwd=str(REPO),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=300, check=False)
        if p.returncode != 0:
            raise AssertionError("%s %s exited %d:\n%s" % (PROG, " ".join(args), p.returncode,
                                                           p.stderr.decode("utf-8", "replace")))
        printed = p.stderr.decode("utf-8", "replace") + p.stdout.decode("utf-8", "replace")
        got[name] = "$ %s %s\n%s" % (PROG, " ".join(args), normalise(printed, inst))
    return got


def readme_samples(text: str) -> Dict[str, str]:
    return {m.group(1): m.group(2) for m in _MARKER.finditer(text)}


def replace_samples(text: str, samples: Dict[str, str]) -> str:
    def block(m: "re.Match[str]") -> str:
        body = samples.get(m.group(1), m.group(2))
        return "<!-- sample: %s -->\n```console\n%s```" % (m.group(1), body if body.endswith("\n") else body + "\n")
    return _MARKER.sub(block, text)


def main(argv: List[str]) -> int:
    """Rewrite the README's sample blocks from a fresh run on a throwaway instance."""
    with tempfile.TemporaryDirectory(prefix="readme-samples-") as root:
        inst = ApacheInstance(root, "webkit-only")
        inst.start()
        try:
            samples = run_samples(inst)
        finally:
            inst.cleanup()
    text = README.read_text(encoding="utf-8")
    missing = sorted(set(samples) - set(readme_samples(text)))
    README.write_text(replace_samples(text, samples), encoding="utf-8")
    print("README.md: %d sample blocks rewritten%s" % (
        len(samples) - len(missing), "; no marker for: " + ", ".join(missing) if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
