"""Run a program: always with a timeout, never raising for the program's own failure, one decoding.

Why one helper: every external program this tool runs (``apache2ctl``,
``systemctl``, ``policy-rc.d``, ``dpkg-query``, ``sh`` for Debian's
envvars) can hang, be missing or print bytes that are not UTF-8 (a vhost
path in latin-1, a localised message). One place decides the timeout
handling, the decoding and the exceptions: a call returns a `Ran` that says
what happened, and the caller decides what it means.

Output is decoded as UTF-8 with replacement characters (the text is shown
to a person and parsed for ASCII markers), or as latin-1 when the caller
needs every byte back (``encoding="latin-1"`` maps bytes one to one).
"""

import subprocess
from typing import Dict, List, Optional, Sequence

from .records import dataclass


@dataclass(frozen=True)
class Ran:
    """What one run of a program did.

    ``returncode`` is None when the program could not run at all or was
    killed at the timeout; ``error`` then says which, in words.
    """

    argv: List[str]
    returncode: Optional[int]
    stdout: str
    stderr: str = ""
    error: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def run(argv: Sequence[str], *, timeout: float, env: Optional[Dict[str, str]] = None,
        input: Optional[bytes] = None, merge_stderr: bool = False, capture: bool = True,
        encoding: str = "utf-8") -> Ran:
    """Run argv (no shell) with stdin empty (or ``input``) and return what happened.

    ``merge_stderr`` puts stderr into ``stdout`` in the order the program
    wrote them (``apache2ctl`` reports errors on either); ``capture=False``
    discards the output (a yes/no question such as ``systemctl is-active``).
    Never raises for a missing program, a permission error or a timeout.
    """
    args = [str(a) for a in argv]
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    err = (subprocess.STDOUT if merge_stderr else subprocess.PIPE) if capture else subprocess.DEVNULL
    try:
        # Python 3.6 refuses `input` together with any `stdin=`, even None: pass one of them.
        stdin = {} if input is not None else {"stdin": subprocess.DEVNULL}
        p = subprocess.run(args, env=env, input=input, stdout=out, stderr=err, timeout=timeout, check=False, **stdin)
    except subprocess.TimeoutExpired:
        return Ran(args, None, "", "", f"{' '.join(args)}: timed out after {timeout:g}s", timed_out=True)
    except OSError as exc:
        return Ran(args, None, "", "", f"{' '.join(args)}: could not run: {exc.strerror or exc}")
    return Ran(args, p.returncode, _decode(p.stdout, encoding), _decode(p.stderr, encoding))


def _decode(data: Optional[bytes], encoding: str) -> str:
    return data.decode(encoding, "replace") if data else ""
