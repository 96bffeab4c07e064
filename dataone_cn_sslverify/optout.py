"""The administrator's opt-out: "disabled by the administrator", kept in the state dir.

Why: an administrator who runs ``dataone-cn-sslverify revert`` by hand has
decided against the policy on this host. The package must not undo that
decision on its next upgrade, ``--reinstall``, ``dpkg-reconfigure`` or
trigger (Debian's own ``apache2_invoke`` leaves a module alone that
``a2query`` reports as "disabled by local admin" for the same reason). The
record says who decided and when; ``apply`` by hand removes it.

The record is ``optout.json`` in the state dir, written with
`store.atomic_write` (0600). It is read without trusting it: a record that
is not a regular file, or does not parse, still counts as an opt-out (the
administrator's decision wins over our doubt) and says why it is odd.
"""

import json
import os
import pwd
import stat
import time
from typing import Optional

from .store import atomic_write
from .records import dataclass

FILENAME = "optout.json"


@dataclass
class OptOut:
    """Who disabled the policy on this host, when, and on which vhost."""

    user: str
    when: float
    vhost: str
    problem: str = ""  # why the record could not be read as written (it still counts)

    @property
    def when_utc(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.when)) if self.when else "unknown time"

    def describe(self) -> str:
        """One line for status and the maintainer scripts."""
        if self.problem:
            return f"disabled by the administrator (record unreadable: {self.problem})"
        where = f" on {self.vhost}" if self.vhost else ""
        return f"disabled by the administrator ({self.user}, {self.when_utc}{where})"

    def to_json(self) -> dict:
        return {"disabled_by": self.user, "time": self.when, "time_utc": self.when_utc, "vhost": self.vhost,
                "problem": self.problem or None}


def path(state_dir: str) -> str:
    return os.path.join(state_dir, FILENAME)


def current_user() -> str:
    """The person behind the command: SUDO_USER, else the login name, else the effective user's name."""
    sudo = os.environ.get("SUDO_USER", "").strip()
    if sudo:
        return sudo
    try:
        return os.getlogin()
    except OSError:
        pass
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def read(state_dir: str) -> Optional[OptOut]:
    """The opt-out record, or None when there is none."""
    p = path(state_dir)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return OptOut("", 0.0, "", problem=f"{p}: {exc.strerror or exc}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return OptOut("", 0.0, "", problem=f"{p} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(65536)
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw.decode("utf-8"))
        user, when, vhost = doc["disabled_by"], doc["time"], doc.get("vhost", "")
        if not isinstance(user, str) or not isinstance(when, (int, float)) or not isinstance(vhost, str):
            raise ValueError("unexpected field types")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return OptOut("", 0.0, "", problem=f"{p}: {exc}")
    return OptOut(user, float(when), vhost)


def record(state_dir: str, vhost: str) -> OptOut:
    """Write the opt-out (the state dir is created 0700 if missing); returns what was written."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    if os.path.islink(path(state_dir)):  # never write through a planted link
        os.unlink(path(state_dir))
    rec = OptOut(current_user(), time.time(), vhost)
    doc = {"disabled_by": rec.user, "time": rec.when, "vhost": rec.vhost}
    atomic_write(path(state_dir), (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), mode=0o600)
    return rec


def clear(state_dir: str) -> bool:
    """Remove the opt-out; True if there was one."""
    try:
        os.unlink(path(state_dir))
    except FileNotFoundError:
        return False
    return True
