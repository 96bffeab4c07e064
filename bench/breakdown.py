#!/usr/bin/python3
"""Where the wall time of one `apply` / `revert` goes (exclusive time per component).

Runs the real command in-process (``cli.main([op])``) with timers wrapped
around the package's effectful functions; nothing of the package is changed on
disk. Exclusive time: a component's own time minus the wrapped components it
calls (``graceful`` minus the ``apache2ctl graceful`` process and the pid-file
lookups it makes = its wait for the new generation).

Usage (with an instance's environment): breakdown.py OP... ; prints one JSON
list, one {component: seconds} per OP, in order.
"""

import functools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List

T_START = time.monotonic()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataone_cn_sslverify import apachectl, cli, livecheck, locate, policy, store, transaction  # noqa: E402

T_IMPORTED = time.monotonic()
ACC: Dict[str, float] = {}
STACK: List[List[float]] = []


def timed(name: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        STACK.append([0.0])
        t0 = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            dt = time.monotonic() - t0
            inner = STACK.pop()[0]
            if STACK:
                STACK[-1][0] += dt
            key = name(*a, **kw)
            ACC[key] = ACC.get(key, 0.0) + dt - inner
    return wrapper


def const(n: str) -> Callable[..., str]:
    return lambda *a, **kw: n


def _run_name(args: List[str], *a: Any, **kw: Any) -> str:
    return "apache2ctl " + " ".join(args)


def install() -> None:
    apachectl.run = timed(_run_name, apachectl.run)
    # configtest()/dump_includes() call run() through the module global: already wrapped.
    apachectl._envvar = timed(const("sh: source envvars for the pid file (apachectl._envvar)"), apachectl._envvar)
    apachectl._children = timed(const("graceful: scan /proc for children"), apachectl._children)
    apachectl.graceful = timed(const("graceful: wait for the new generation (sleep loop)"), apachectl.graceful)
    # The live gate: the required paths from the loaded configuration, then the probes (the two pinned
    # handshakes, the throwaway untrusted certificate made meanwhile, the concurrent probes).
    livecheck.required_paths_of = timed(const("live check: required paths (parse the loaded config)"),
                                        livecheck.required_paths_of)
    inner = timed(const("live check: probe the live vhost"), livecheck.run)

    def run(*a: Any, **kw: Any) -> Any:
        out = inner(*a, **kw)
        ACC["_probe_calls"] = ACC.get("_probe_calls", 0) + 1
        ACC["_probe_rows"] = ACC.get("_probe_rows", 0) + len(out.seen)
        return out
    livecheck.run = run
    locate.locate = timed(const("locate: read + parse + assess loaded files"), locate.locate)
    policy.plan_apply = timed(const("plan (policy)"), policy.plan_apply)
    policy.plan_revert = timed(const("plan (policy)"), policy.plan_revert)
    for name in ("cas_write", "atomic_write"):  # the transaction's vhost write (compare-and-swap, fsync)
        if hasattr(transaction, name):
            setattr(transaction, name, timed(const("write vhost (atomic, fsync)"), getattr(transaction, name)))
    for meth in ("backup", "write_journal", "save_block", "lock", "prune", "clear_journal", "load_block", "drop_block"):
        if hasattr(store.Store, meth):
            setattr(store.Store, meth, timed(const(f"store: {meth}"), getattr(store.Store, meth)))
    transaction.log_syslog = timed(const("syslog"), transaction.log_syslog)


def main() -> int:
    install()
    out = []
    devnull = open(os.devnull, "w")
    for i, op in enumerate(sys.argv[1:]):
        ACC.clear()
        argv = op.split()
        real_err, real_out = sys.stderr, sys.stdout
        sys.stderr = sys.stdout = devnull
        t0 = time.monotonic()
        try:
            rc = cli.main(argv)
        finally:
            sys.stderr, sys.stdout = real_err, real_out
        total = time.monotonic() - t0
        row = dict(ACC)
        row["other (python: CLI, transaction, journal bookkeeping)"] = total - sum(
            v for k, v in ACC.items() if not k.startswith("_"))
        row["_total"] = total
        row["_rc"] = rc
        if i == 0:
            row["_imports"] = T_IMPORTED - T_START
        out.append(row)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
