"""Exit codes and the exception base every refusal or failure derives from.

Why one module: the exit code is the contract with the operator, the
maintainer scripts and the monitoring; it must mean one thing everywhere.
Each exception carries the code it maps to, so ``cli`` has one mapping
(``exc.exit_code``) instead of deciding per call site.
"""

import enum
from typing import Optional


class ExitCode(enum.IntEnum):
    """The command's exit codes (README "Exit codes", man page EXIT STATUS)."""

    OK = 0            #: done, or nothing to do
    FAILED = 1        #: failed; the previous configuration was restored and is active
    REFUSED = 2       #: refused (usage, unrecognised block, bad input, broken config); nothing changed
    UNRESTORED = 3    #: failed and could not fully restore; the message says exactly what to run
    NOT_FOUND = 4     #: no CN SSL vhost found; nothing changed
    HAZARD = 5        #: `check` found a hazard, or `probe --compare` a regression
    UNREACHABLE = 6   #: `probe`/`monitor --live` could not reach the server; nothing changed


class SslVerifyError(Exception):
    """Base of every error this tool reports to a person; ``exit_code`` is what the command exits with."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, exit_code: "Optional[ExitCode]" = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = ExitCode(exit_code)


class Refused(SslVerifyError):
    """Bad input, an unrecognised block, an unsafe state dir, a config broken by someone else: nothing changed."""

    exit_code = ExitCode.REFUSED


class NotFoundError(SslVerifyError):
    """No CN SSL vhost could be found; nothing changed."""

    exit_code = ExitCode.NOT_FOUND


class Unrestored(SslVerifyError):
    """A failure the tool could not undo by itself; the message carries the exact commands to run."""

    exit_code = ExitCode.UNRESTORED


class Unreachable(SslVerifyError):
    """The live server could not be reached (probe, monitor --live); nothing changed."""

    exit_code = ExitCode.UNREACHABLE
