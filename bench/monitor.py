"""(4) Monitor: is `monitor` cheap enough to run every minute?

Goal (issue "monitoring"): without ``--live``, the wall time of
``dataone-cn-sslverify monitor`` is within 3x the start-up of
``python3 -c pass`` plus one ``apache2ctl -t -D DUMP_INCLUDES`` (the one
Apache parse it cannot avoid: it is both the list of loaded files and the
configtest verdict). Budget = 3 * median(python3 -c pass) + median(dump).

Measured on one harness Apache (webkit-only vhost, the policy applied with
the tool's own ``apply``, Apache running), idle, each round running every
item once in a rotated order. ``monitor`` is run as the Check_MK local
check and the Nagios plugin run it: the installed launcher
(``/usr/sbin/dataone-cn-sslverify``, ``#!/usr/bin/python3 -IS``; here a
copy of ``sbin/dataone-cn-sslverify`` whose private module dir is this
clone), in both formats; also through ``python3 -m dataone_cn_sslverify``
(`common.TOOL`, with the site module). Each is a hit of the verdict cache
(`monitor_fast`: nothing changed since the last run, the steady state of a
check run every minute), and separately the first run after a change (a
miss: before each such run the cache is replaced by one whose key differs
in the last file recorded, so the run reads it, stats every file, finds the
change and does the full work, which saves the verdict again). Then
``monitor --live`` with a fresh cached verdict and ``monitor --live
--cache 0`` (probing every time). Also the imports of the fast path and of
the full path, and the in-process split of a full run (``-X importtime`` is
not used for timing: it slows what it measures).
"""

import subprocess
import time
from typing import Any, Dict, List

from common import PYTHON, REPO, TOOL, ApacheInstance, launcher, loadavg, new_root, remove_root, run_timed, shown, summary, tool_env

from dataone_cn_sslverify import monitor_cache, monitor_fast  # noqa: E402  (common put the clone on sys.path)

MONITOR_IMPORTS = ("import dataone_cn_sslverify.cli, dataone_cn_sslverify.monitor, "
                   "dataone_cn_sslverify.monitor_observe")
FAST_IMPORTS = "import dataone_cn_sslverify.entry, dataone_cn_sslverify.monitor_fast, fcntl, select"
#: The item the budget is judged on: the installed command, a hit (the steady state).
MONITOR = "monitor"
MISS = "monitor, first run after a change (miss)"


def break_cache(state_dir: str) -> None:
    """Replace the verdict cache by one whose last recorded file no longer matches: the next run is a miss."""
    raw = monitor_cache.read_private(state_dir, monitor_fast.NAME, monitor_fast.MAX_BYTES)
    doc = monitor_fast.parse(raw) if raw is not None else None
    if doc is None:
        return  # already a miss
    paths = doc.paths[:-1] + [(doc.paths[-1][0], doc.paths[-1][1], doc.paths[-1][2] + " changed")]
    section = b"".join(monitor_fast.netstring(x.encode("utf-8", "surrogateescape")) for e in paths for x in e)
    data = monitor_fast.serialise(doc.context, doc.ctl, doc.dump, section, doc.state, doc.outputs["nagios"],
                                  doc.outputs["checkmk"], doc.outputs["json"])
    assert monitor_cache.write_private(state_dir, monitor_fast.NAME, data, monitor_fast.MAX_BYTES)


def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    rounds = int(cfg.get("rounds", 30))
    root = new_root("monitor")
    inst = ApacheInstance(root, "webkit-only")
    try:
        inst.start()
        env = tool_env(inst)
        run_timed(TOOL + ["apply"], env)
        cmd = [launcher(root)]
        items: Dict[str, List[str]] = {
            "python3 -c pass": [PYTHON, "-c", "pass"],
            "apache2ctl -t -D DUMP_INCLUDES": ["/usr/sbin/apache2ctl", "-t", "-D", "DUMP_INCLUDES"],
            "import what the fast path loads": [PYTHON, "-c", FAST_IMPORTS],
            "import what monitor loads": [PYTHON, "-c", MONITOR_IMPORTS],
            MONITOR: cmd + ["monitor"],
            "monitor --format checkmk": cmd + ["monitor", "--format", "checkmk"],
            "monitor (python3 -m)": TOOL + ["monitor"],
            MISS: cmd + ["monitor"],
            "monitor --live (cached)": cmd + ["monitor", "--live", "--cache", "86400"],
            "monitor --live --cache 0": cmd + ["monitor", "--live", "--cache", "0"],
        }
        state_dir = str(inst.state_dir)
        # The racy rule: a verdict is saved only once every file it read is RACY seconds old (apply wrote some).
        time.sleep(monitor_fast.RACY + 0.5)
        for argv in items.values():  # warm: byte-code, page cache, both caches
            run_timed(argv, env, check=False)
        if monitor_cache.read_private(state_dir, monitor_fast.NAME, monitor_fast.MAX_BYTES) is None:
            raise RuntimeError("monitor saved no verdict cache: every run below would be a miss")
        times: Dict[str, List[float]] = {k: [] for k in items}
        outputs: Dict[str, str] = {}
        load_before = loadavg()
        names = list(items)
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                if name == MISS:
                    break_cache(state_dir)
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
            "ratio": stats[MONITOR]["median"] / budget,
            "ratio_min": stats[MONITOR]["min"] / budget_min,
            "ratio_miss": stats[MISS]["median"] / budget,
            "launcher": "a copy of sbin/dataone-cn-sslverify whose module dir is this clone",
            "same_output": outputs[MONITOR] == outputs[MISS] == outputs["monitor (python3 -m)"],
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
