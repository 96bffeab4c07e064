"""Run the command with a failpoint hook installed in-process (tests only; not a test module).

The package reads no failpoint variable: an environment variable left set on
a production host cannot kill the tool mid-change. This wrapper, which only
exists in the source tree's tests/, reads ``DATAONE_CN_SSLVERIFY_FAILPOINT``
and installs `transaction.FAILPOINT`, then runs the real CLI in the same
process. Usage: ``python3 tests/integration/failpoint_cli.py ARGS...`` with

* ``kill:STEP`` / ``term:STEP`` / ``hup:STEP`` / ``int:STEP``: the process sends
  itself that real signal when STEP starts (a crash, an operator's Ctrl-C,
  a dropped ssh session, at a deterministic point);
* ``edit:STEP``: another writer appends ``DATAONE_CN_SSLVERIFY_TEST_EDIT_TEXT``
  to ``DATAONE_CN_SSLVERIFY_TEST_EDIT_FILE`` when STEP starts (an operator's
  edit racing the run).

Several may be given, separated by commas.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dataone_cn_sslverify import cli, transaction  # noqa: E402

SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "hup": signal.SIGHUP, "int": signal.SIGINT}


def _hook(specs):
    def hook(step):
        for kind, at in specs:
            if at != step:
                continue
            if kind in SIGNALS:
                os.kill(os.getpid(), SIGNALS[kind])
            elif kind == "edit":
                with open(os.environ["DATAONE_CN_SSLVERIFY_TEST_EDIT_FILE"], "ab") as f:
                    f.write(os.environ.get("DATAONE_CN_SSLVERIFY_TEST_EDIT_TEXT", "# edited while the run ran\n").encode())
    return hook


def main():
    spec = os.environ.get("DATAONE_CN_SSLVERIFY_FAILPOINT", "")
    specs = [tuple(s.split(":", 1)) for s in spec.split(",") if ":" in s]
    transaction.FAILPOINT = _hook(specs)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
