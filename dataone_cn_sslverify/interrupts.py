"""SIGINT, SIGTERM and SIGHUP during a change: noted, never obeyed half-way.

Why deferral and not an exception: a Python signal handler that raises can
fire anywhere -- inside the ``except`` clause that starts the rollback,
inside the rollback itself, inside a ``finally`` that releases the lock -- and
a burst of signals (an operator's Ctrl-C, then a dropped ssh session, then
systemd's SIGTERM) turns one exception into several, one of which escapes
the rollback. Here the handler only records the signal. The transaction
looks at the record at its step boundaries (`Deferred.pending`): before the
write it stops with nothing changed; from the write on it takes the rollback
path; the rollback and recovery never look, so nothing can interrupt them
(SIGKILL aside, which the journal covers).

Handlers are reset on ``exec``, so the apache2ctl, systemctl and openssl
children get the default dispositions (a blocked signal mask would have been
inherited by Apache itself).
"""

import signal
import threading
from typing import Any, Dict, List, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Deferred:
    """A context in which SIGINT/SIGTERM/SIGHUP are recorded, not acted on."""

    def __init__(self, hold: bool = False, active: bool = True) -> None:
        """hold: ignore these signals after the context ends (the command only prints and exits
        then: a late signal must not replace its exit code by a death). Ignored, not recorded:
        at exit the interpreter resets Python-level handlers to the default, not SIG_IGN."""
        self.received: List[int] = []
        self._previous: Dict[int, Any] = {}
        self.hold, self.active = hold, active

    def _handler(self, signum: int, frame: Any) -> None:
        self.received.append(signum)

    def __enter__(self) -> "Deferred":
        if self.active and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            if self.hold:
                handler = signal.SIG_IGN
            signal.signal(sig, handler)
        self._previous = {}

    def pending(self) -> Optional[str]:
        """The first signal received so far, by name (``SIGTERM``), or None."""
        return signal.Signals(self.received[0]).name if self.received else None

    def interrupted(self) -> bool:
        return bool(self.received)

    def summary(self) -> str:
        """``SIGTERM x3, SIGHUP x2`` for the final message."""
        counts: Dict[str, int] = {}
        for s in self.received:
            name = signal.Signals(s).name
            counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items())
