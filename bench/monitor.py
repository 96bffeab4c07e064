"""(4) Monitor: is `monitor` cheap enough to run every minute?

Goal (issue "monitoring"): without ``--live``, the wall time of
``dataone-cn-sslverify monitor`` is within 3x the start-up of
``python3 -c pass`` plus one ``apache2ctl -t -D DUMP_INCLUDES`` (the one
Apache parse it cannot avoid: it is both the list of loaded files and the
configtest verdict). Budget = 3 * median(python3 -c pass) + median(dump).

Measured on one harness Apache (webkit-only vhost, the policy applied with
the tool's own ``apply``, Apache running), idle, each round running every
item once in a rotated order: ``python3 -c pass``, the dump, ``monitor``
(Nagios format), ``monitor --format checkmk``, ``monitor --live`` with a
fresh cached verdict, and ``monitor --live --cache 0`` (probing every time).
Also the import of the modules ``monitor`` loads, and the in-process split
of a run (``-X importtime`` is not used: it slows what it measures).
"""

import subprocess
from typing import Any, Dict, List

from common import PYTHON, REPO, TOOL, ApacheInstance, loadavg, new_root, remove_root, run_timed, shown, summary, tool_env

MONITOR_IMPORTS = ("import dataone_cn_sslverify.cli, dataone_cn_sslverify.monitor, "
                   "dataone_cn_sslverify.monitor_observe")


def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    rounds = int(cfg.get("rounds", 30))
    root = new_root("monitor")
    inst = ApacheInstance(root, "webkit-only")
    try:
        inst.start()
        env = tool_env(inst)
        run_timed(TOOL + ["apply"], env)
        items: Dict[str, List[str]] = {
            "python3 -c pass": [PYTHON, "-c", "pass"],
            "apache2ctl -t -D DUMP_INCLUDES": ["/usr/sbin/apache2ctl", "-t", "-D", "DUMP_INCLUDES"],
            "import what monitor loads": [PYTHON, "-c", MONITOR_IMPORTS],
            "monitor": TOOL + ["monitor"],
            "monitor --format checkmk": TOOL + ["monitor", "--format", "checkmk"],
            "monitor --live (cached)": TOOL + ["monitor", "--live", "--cache", "86400"],
            "monitor --live --cache 0": TOOL + ["monitor", "--live", "--cache", "0"],
        }
        for argv in items.values():  # warm: byte-code, page cache, the --live cache
            run_timed(argv, env, check=False)
        times: Dict[str, List[float]] = {k: [] for k in items}
        outputs: Dict[str, str] = {}
        load_before = loadavg()
        names = list(items)
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                r = run_timed(items[name], env, check=False)
                if name.startswith("monitor") and r["rc"] not in (0,):
                    raise RuntimeError(f"{name}: exit {r['rc']}: {r['stdout']}{r['stderr']}")
                times[name].append(r["seconds"])
                if name.startswith("monitor"):
                    outputs[name] = r["stdout"]
        stats = {k: summary(v) for k, v in times.items()}
        budget = 3 * stats["python3 -c pass"]["median"] + stats["apache2ctl -t -D DUMP_INCLUDES"]["median"]
        budget_min = 3 * stats["python3 -c pass"]["min"] + stats["apache2ctl -t -D DUMP_INCLUDES"]["min"]
        split = _split(env)
        return {
            "config": {"rounds": rounds},
            "commands": {k: shown(v) for k, v in items.items()},
            "seconds": stats,
            "budget": budget,
            "budget_min": budget_min,
            "ratio": stats["monitor"]["median"] / budget,
            "ratio_min": stats["monitor"]["min"] / budget_min,
            "outputs": outputs,
            "split": split,
            "loadavg": [load_before, loadavg()],
        }
    finally:
        inst.cleanup()
        remove_root(root)


_SPLIT = r"""
import time, os, sys
t0 = time.perf_counter()
from dataone_cn_sslverify import cli, monitor, monitor_observe, apachectl, paths
t1 = time.perf_counter()
d = apachectl.dump_includes()
t2 = time.perf_counter()
o, a = monitor_observe.gather(None, paths.policy_path(), paths.state_dir())
t3 = time.perf_counter()
monitor.format_nagios(monitor.judge(o))
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, "ssl" in sys.modules, "dataone_cn_sslverify.probe" in sys.modules)
"""


def _split(env: Dict[str, str]) -> Dict[str, Any]:
    """In one process: imports, one dump (as a reference), the whole gather (which makes its own dump), judge+format."""
    rows = []
    for _ in range(7):
        p = subprocess.run([PYTHON, "-c", _SPLIT], env=env, cwd=REPO, stdout=subprocess.PIPE, check=True)
        f = p.stdout.decode().split()
        rows.append([float(x) for x in f[:4]] + [f[4] == "True", f[5] == "True"])
    med = sorted(rows, key=lambda r: sum(r[:4]))[len(rows) // 2]
    return {"imports": med[0], "dump": med[1], "gather": med[2], "judge+format": med[3],
            "ssl_imported": any(r[4] for r in rows), "probe_imported": any(r[5] for r in rows)}
