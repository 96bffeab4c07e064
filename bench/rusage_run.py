#!/usr/bin/python3
"""`python3 bench/rusage_run.py OUT.json ARGS...` = `python3 -m dataone_cn_sslverify ARGS...`, plus its peak memory.

Runs the package's ``__main__`` in this interpreter (runpy) and, at exit,
writes to OUT.json the exit code, this process's peak resident set size
(``VmHWM`` of /proc/self/status, in KiB) and CPU time (user + system) of the
tool's own process and of the children it waited for (``apache2ctl``, ``sh``).

Why VmHWM and not getrusage(): ``ru_maxrss`` survives fork and exec on Linux,
so a process started from a big parent reports the *parent's* peak, and a
child forked from the tool reports the tool's. VmHWM belongs to the address
space, which exec replaces. Apache's own peak while parsing is measured
separately (GNU time on ``apache2ctl -t -D DUMP_INCLUDES``).
"""

import json
import resource
import runpy
import sys


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


out = sys.argv[1]
sys.argv = ["dataone_cn_sslverify"] + sys.argv[2:]
code = 0
try:
    runpy.run_module("dataone_cn_sslverify", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    with open(out, "w") as f:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        json.dump({"rc": code, "self_maxrss_kib": vm_hwm_kib(),
                   "self_cpu": me.ru_utime + me.ru_stime, "children_cpu": kids.ru_utime + kids.ru_stime}, f)
sys.exit(code)
