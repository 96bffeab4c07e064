"""Helpers shared by test_transaction.py and test_faults.py (not a test module).

The tool under test always runs as a real subprocess,
``/usr/bin/python3 -m dataone_cn_sslverify [--json] COMMAND``, with the
instance's environment (APACHE_CONFDIR, APACHE_ENVVARS, the state dir and the
policy snippet of the temp instance), exactly as an operator would run it.
What a test then checks is observed independently of the package: the bytes
on disk, Apache's processes and error log, and curl's view of the TLS
handshake (``ApacheInstance.request``).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from harness import ApacheInstance
from harness.instance import USER_AGENTS
from dataone_cn_sslverify.records import dataclass

PYTHON = sys.executable  # Debian's 3.11 under `make test`, 3.6 under `make test-py36`
MAIN = Path(__file__).resolve().parents[2]
IE11 = USER_AGENTS["ie11"]
SAFARI = USER_AGENTS["safari"]
CURL_UA = USER_AGENTS["curl"]

#: The webkit-only block exactly as the fixture vhost holds it (lines 150-156).
WEBKIT_ONLY_BLOCK = (
    b'\tSSLVerifyClient none\n'
    b'\t<Location "/cn">\n'
    b'\t\t<If " ! ( %{HTTP_USER_AGENT} =~ /webkit/i )">\n'
    b'\t\t\tSSLVerifyClient optional\n'
    b'\t\t</If>\n'
    b'\t</Location>\n'
    b'\tSSLVerifyDepth 10\n'
)
BEGIN = b"# dataone-cn-sslverify: begin (managed; `dataone-cn-sslverify revert` restores the original)"
END = b"# dataone-cn-sslverify: end"

#: Every step an apply that changes a running server reports, in order (docs/design.md).
APPLY_STEPS = ["lock", "configtest", "locate", "plan", "backup", "journal", "write", "configtest",
               "reload", "probe", "commit"]
#: The first apply also writes the policy's live copy (a second write step, in the same journal).
FIRST_APPLY_STEPS = APPLY_STEPS[:APPLY_STEPS.index("write") + 1] + ["write"] + APPLY_STEPS[APPLY_STEPS.index("write") + 1:]


def live_path(inst: ApacheInstance) -> Path:
    """The policy's live copy for this instance: next to its policy file (the conffile, relocated)."""
    return inst.policy_path.parent / "cn-sslverify.live.conf"


def live_header(inst: ApacheInstance, body: bytes) -> bytes:
    """The first line of the live copy of ``body``, computed here from the documented format."""
    conf = str(inst.policy_path)
    return ("# Written by dataone-cn-sslverify from %s (sha256 %s) after a config test, a reload and the live check. "
            "Do not edit: edit %s, then run `dataone-cn-sslverify apply`.\n"
            % (conf, hashlib.sha256(body).hexdigest(), conf)).encode()


def expected_applied(inst: ApacheInstance, original: Optional[bytes] = None) -> bytes:
    """The vhost after a correct apply, computed here (not by the package): block -> marked Include."""
    data = original if original is not None else inst.rendered_vhost()
    assert data.count(WEBKIT_ONLY_BLOCK) == 1, "fixture changed: the webkit-only block is not where expected"
    managed = b"\t%s\n\tInclude %s\n\t%s\n" % (BEGIN, str(live_path(inst)).encode(), END)
    return data.replace(WEBKIT_ONLY_BLOCK, managed)


@dataclass
class Run:
    """One run of the command."""

    argv: List[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def doc(self) -> Dict[str, Any]:
        """The one JSON document of ``--json`` (fails the test if stdout is not exactly that)."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError("stdout is not one JSON document:\n%s" % self) from None

    @property
    def steps(self) -> List[Dict[str, Any]]:
        return list(self.doc.get("steps", []))

    def step_names(self) -> List[str]:
        """The steps, without the live gate's informational "effect" lines (known effects, mitigation)."""
        return [s["name"] for s in self.steps if s["name"] != "effect"]

    def __str__(self) -> str:  # readable assertion messages
        return "$ %s\nexit %s after %.2fs\n--- stderr ---\n%s\n--- stdout ---\n%s" % (
            " ".join(self.argv), self.code, self.seconds, self.stderr[-5000:], self.stdout[-5000:])


FAILPOINT_CLI = Path(__file__).resolve().parent / "failpoint_cli.py"


def tool_env(inst: ApacheInstance, extra: Optional[Dict[str, str]] = None, path_prefix: Optional[Path] = None) -> Dict[str, str]:
    env = inst.env()
    env["PYTHONPATH"] = str(MAIN)
    env.pop("DATAONE_CN_SSLVERIFY_FAILPOINT", None)
    if path_prefix is not None:
        env["PATH"] = "%s:%s" % (path_prefix, env["PATH"])
    env.update(extra or {})
    return env


def argv_of(*args: str, as_json: bool = True, failpoint: bool = False) -> List[str]:
    """The command line; with failpoint, through the tests' wrapper that installs the hook in-process."""
    head = [PYTHON, str(FAILPOINT_CLI)] if failpoint else [PYTHON, "-m", "dataone_cn_sslverify"]
    return head + (["--json"] if as_json else []) + list(args)


def tool(inst: ApacheInstance, *args: str, as_json: bool = True, extra_env: Optional[Dict[str, str]] = None,
         path_prefix: Optional[Path] = None, timeout: float = 120, module: bool = False) -> Run:
    """Run the command against ``inst`` and wait for it.

    A ``DATAONE_CN_SSLVERIFY_FAILPOINT`` in extra_env runs it through the
    failpoint wrapper (the package itself ignores that variable), unless
    module is true: then the installed-style ``python3 -m`` is run with it set.
    """
    argv = argv_of(*args, as_json=as_json,
                   failpoint=not module and "DATAONE_CN_SSLVERIFY_FAILPOINT" in (extra_env or {}))
    t0 = time.monotonic()
    p = subprocess.run(argv, env=tool_env(inst, extra_env, path_prefix), cwd=str(MAIN), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    return Run(argv, p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"),
               time.monotonic() - t0)


def spawn(inst: ApacheInstance, *args: str, extra_env: Optional[Dict[str, str]] = None,
          path_prefix: Optional[Path] = None) -> "subprocess.Popen[bytes]":
    """Start the command without waiting (for concurrency and signal tests)."""
    argv = argv_of(*args, failpoint="DATAONE_CN_SSLVERIFY_FAILPOINT" in (extra_env or {}))
    return subprocess.Popen(argv, env=tool_env(inst, extra_env, path_prefix), cwd=str(MAIN), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: "subprocess.Popen[bytes]", argv: Sequence[str], timeout: float = 120) -> Run:
    t0 = time.monotonic()
    out, err = p.communicate(timeout=timeout)
    return Run(list(argv), p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
               time.monotonic() - t0)


# ---------------------------------------------------------------- what the server and the disk say


def generations(inst: ApacheInstance, settle: float = 0.3, timeout: float = 5.0) -> int:
    """How many times this Apache (re)started serving: +1 per start and per graceful reload.

    The parent logs "resuming normal operations" *after* its new children may
    already serve, so a count read right after a start or a reload can lag by
    one: wait until the count has been stable for ``settle`` seconds (and, for
    a running server, is at least 1).
    """
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        n = inst.error_log().count("resuming normal operations")
        now = time.monotonic()
        if n != last:
            last, since = n, now
        elif now - since >= settle and (n >= 1 or not inst.is_running()):
            return n
        if now > deadline:
            return n
        time.sleep(0.05)


def journal_path(inst: ApacheInstance) -> Path:
    return inst.state_dir / "journal.json"


def backup_files(inst: ApacheInstance) -> List[str]:
    d = inst.state_dir / "backups"
    return sorted(os.listdir(str(d))) if d.is_dir() else []


def temp_leftovers(inst: ApacheInstance) -> List[str]:
    """Temp files of atomic_write next to the vhost (must never survive a run)."""
    d = inst.vhost_path.parent
    return [n for n in os.listdir(str(d)) if n.startswith(".") or n.endswith(".tmp")]


def _log_tail(inst: ApacheInstance, mark: int) -> str:
    return "\n--- Apache error log during the request ---\n" + inst.error_log_since(mark)[-3000:]


def assert_asked(inst: ApacheInstance, user_agent: str, tls: str = "1.2") -> None:
    """curl with this User-Agent is asked for a certificate on /cn/ (renegotiation or PHA) and gets 200."""
    mark = inst.error_log_mark()
    r = inst.request("/cn/", user_agent=user_agent, tls=tls)
    assert r.status == 200 and r.cert_requested, "expected a certificate request for %r (TLS %s):\n%s%s" % (
        user_agent, tls, r, _log_tail(inst, mark))


def assert_not_asked(inst: ApacheInstance, user_agent: str, tls: str = "1.2") -> None:
    mark = inst.error_log_mark()
    r = inst.request("/cn/", user_agent=user_agent, tls=tls)
    assert r.status == 200 and r.cert_requested is False, "expected NO certificate request for %r (TLS %s):\n%s%s" % (
        user_agent, tls, r, _log_tail(inst, mark))


def assert_original_behaviour(inst: ApacheInstance, safari_asked: Optional[bool] = False) -> None:
    """The webkit-only original is live: IE11 (not WebKit) is asked over TLS 1.2, Safari is not."""
    assert inst.is_running(), "Apache is not running any more:\n" + inst.error_log()[-3000:]
    assert_asked(inst, IE11, "1.2")
    if safari_asked is False:
        assert_not_asked(inst, SAFARI, "1.2")
    elif safari_asked:
        assert_asked(inst, SAFARI, "1.2")


def assert_applied_behaviour(inst: ApacheInstance) -> None:
    """The policy is live: browsers (IE11, Safari) not asked, a curl-like API client asked (TLS 1.2 and 1.3)."""
    assert inst.is_running(), "Apache is not running any more:\n" + inst.error_log()[-3000:]
    assert_not_asked(inst, IE11, "1.2")
    assert_not_asked(inst, SAFARI, "1.3")
    assert_asked(inst, CURL_UA, "1.2")
    assert_asked(inst, CURL_UA, "1.3")


def assert_nothing_left_changed(inst: ApacheInstance, before: bytes, run: Run, *, code: int,
                                safari_asked: Optional[bool] = False, behaviour: str = "original") -> None:
    """After a failure: the exit code, byte-identical vhost, server up with the OLD behaviour, no journal."""
    assert run.code == code, "expected exit %d\n%s" % (code, run)
    assert inst.vhost_bytes() == before, "vhost not byte-identical after exit %d\n%s" % (run.code, run)
    assert inst.vhost_link.is_symlink(), "sites-enabled link replaced by a file"
    assert not journal_path(inst).exists(), "journal left behind:\n%s" % run
    assert temp_leftovers(inst) == [], "temp file left next to the vhost: %s" % temp_leftovers(inst)
    if behaviour == "original":
        assert_original_behaviour(inst, safari_asked=safari_asked)
    else:
        assert_applied_behaviour(inst)
