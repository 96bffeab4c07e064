"""What ``status`` says beyond each vhost's block: opt-out, drift, a configuration broken by someone else.

Why a module of its own: the maintainer scripts and ``status`` must tell
the same story. The three facts come from the state dir and Apache's own
config test, never from our guesses:

* **opt-out** (`optout`): the administrator reverted by hand; nothing
  applies the policy again until they run ``apply``;
* **drift**: we applied the policy to a vhost (its original block is saved
  in the state dir, and no revert removed it) but the vhost carries the
  original block again. ``dpkg-reconfigure dataone-cn-os-core`` does this:
  its postinst moves the vhost aside and copies the template without
  unpacking it, so no trigger of ours fires;
* **broken**: ``apache2ctl configtest`` fails on a file and line that is
  not ours: nothing can be applied until its owner fixes it.
"""

import re
from typing import Optional

from . import optout, policy
from .store import Store

PACKAGE = "dataone-cn-sslverify"

#: Apache's "AH00526: Syntax error on line 3 of /etc/apache2/conf-enabled/x.conf:".
_SYNTAX_AT = re.compile(r"[Ss]yntax error on line (\d+) of (.+?):?(?:\s|$)")


def broken_at(first_error: str) -> Optional[str]:
    """FILE:LINE of a configtest failure, or None when Apache did not name one."""
    m = _SYNTAX_AT.search(first_error or "")
    return f"{m.group(2)}:{m.group(1)}" if m else None


def broken_line(first_error: str) -> str:
    """``not applied: configuration broken by FILE:LINE (Apache's words)``."""
    where = broken_at(first_error)
    return f"not applied: configuration broken by {where or 'an unknown file'} ({first_error})"


def drift(a: policy.Assessment, store: Store, opted_out: Optional[optout.OptOut]) -> Optional[str]:
    """The drift line for this vhost, or None.

    Drift: the vhost holds an original block although we applied the policy
    to it and nobody reverted it (the saved block is still in the state dir),
    and the administrator did not opt out.
    """
    if opted_out is not None or a.state != "original":
        return None
    try:
        saved = store.load_block(a.filename)
    except (OSError, ValueError):
        return None
    if saved is None:
        return None
    return (f"drift: {a.filename} no longer carries the policy (something rewrote it, e.g. "
            f"`dpkg-reconfigure dataone-cn-os-core`); run `{PACKAGE} apply`")
