"""(2) Overhead: the tool's commands against the bare floor, measured alternately in one run.

apply / revert (with and without the probe) against the floor
    `apache2ctl configtest` ; `apache2ctl graceful` ; wait until the new
    generation answers (the error log's "resuming normal operations" count
    went up and an HTTPS GET /cn/ returns 200; polled every 10 ms)
status / diff against `python3 -c pass` (the cost of starting Python), with
    `python3 -c 'import dataone_cn_sslverify.cli'` and
    `apache2ctl -t -D DUMP_INCLUDES` as the pieces of the floor they stand on.

Idle server (no load), one Apache of the harness with the webkit-only vhost.
Each round runs every item once; the order is rotated each round so that no
item always follows the same one. Then `breakdown.py` attributes the time of
apply/revert to components (in-process timers, same instance).
"""

import json
import socket
import ssl
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List

from common import PYTHON, REPO, ApacheInstance, launcher, loadavg, new_root, remove_root, shown, summary, tool_env


def _https_ok(inst: ApacheInstance) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    try:
        with socket.create_connection(("127.0.0.1", inst.https_port), timeout=2) as s:
            with ctx.wrap_socket(s, server_hostname=inst.server_name) as ss:
                ss.sendall(f"GET /cn/ HTTP/1.1\r\nHost: {inst.server_name}\r\nUser-Agent: {ua}\r\n"
                           "Connection: close\r\n\r\n".encode())
                return ss.recv(64).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


def floor(inst: ApacheInstance) -> float:
    """configtest + graceful + wait until the new generation answers; seconds."""
    log = inst.error_log_path
    before = log.read_bytes().count(b"resuming normal operations")
    t0 = time.monotonic()
    r = inst.apache2ctl("configtest")
    if not r.ok:
        raise RuntimeError("configtest: " + r.output)
    r = inst.apache2ctl("graceful")
    if not r.ok:
        raise RuntimeError("graceful: " + r.output)
    deadline = t0 + 30
    while time.monotonic() < deadline:
        if log.read_bytes().count(b"resuming normal operations") > before and _https_ok(inst):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError("no new generation within 30 s")


def _cmd(argv: List[str], env: Dict[str, str], expect: int = 0) -> Callable[[], float]:
    def go() -> float:
        t0 = time.monotonic()
        p = subprocess.run(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        dt = time.monotonic() - t0
        if p.returncode != expect:
            raise RuntimeError(f"{shown(argv)}: exit {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
        return dt
    return go


def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    root = new_root("overhead")
    inst = ApacheInstance(root, "webkit-only")
    res: Dict[str, Any] = {"config": dict(cfg)}
    try:
        inst.start()
        env = tool_env(inst)
        # The command as an operator runs it: the installed launcher (#!/usr/bin/python3 -IS), here a copy
        # whose private module dir is this clone.
        TOOL = [launcher(root)]
        # Warm-up (byte-code cache, page cache, first TLS handshake): not measured.
        for a in (["status"], ["diff"], ["apply"], ["revert"]):
            _cmd(TOOL + a, env)()
        floor(inst)
        res["loadavg_before"] = loadavg()

        # -- apply / revert against the floor -------------------------------------------------
        pairs = {
            "apply": (TOOL + ["apply"], TOOL + ["revert"]),
            "apply --no-probe": (TOOL + ["apply", "--no-probe"], TOOL + ["revert", "--no-probe"]),
        }
        times: Dict[str, List[float]] = {k: [] for k in ("floor", "apply", "revert", "apply --no-probe",
                                                          "revert --no-probe")}
        items: List[Any] = [("floor", lambda: floor(inst))]
        for name, (ap, rv) in pairs.items():
            items.append((name, ap, rv))
        for i in range(cfg["rounds"]):
            order = items[i % len(items):] + items[:i % len(items)]
            for it in order:
                if it[0] == "floor":
                    times["floor"].append(it[1]())
                    continue
                name, ap, rv = it
                times[name].append(_cmd(ap, env)())
                times["floor"].append(floor(inst))  # a floor between every pair: alternate, same conditions
                times[name.replace("apply", "revert")].append(_cmd(rv, env)())
        res["apply"] = {k: summary(v) for k, v in times.items()}
        res["apply_raw"] = times
        fm = statistics.median(times["floor"])
        res["apply_ratio"] = {k: statistics.median(v) / fm for k, v in times.items() if k != "floor"}
        res["apply_commands"] = {
            "floor": "apache2ctl configtest; apache2ctl graceful; poll every 10 ms until the error log has one more "
                     "'resuming normal operations' and GET https://127.0.0.1:PORT/cn/ answers 200",
            "apply": shown(TOOL + ["apply"]), "revert": shown(TOOL + ["revert"]),
            "apply --no-probe": shown(TOOL + ["apply", "--no-probe"]),
            "revert --no-probe": shown(TOOL + ["revert", "--no-probe"]),
        }

        # -- status / diff against starting Python --------------------------------------------
        quick = {
            "python3 -c pass": [PYTHON, "-c", "pass"],
            "import the package": [PYTHON, "-c", "import dataone_cn_sslverify.cli"],
            "import all but probe": [PYTHON, "-c", "import argparse, json, dataone_cn_sslverify.apacheconf, "
                                     "dataone_cn_sslverify.apachectl, dataone_cn_sslverify.locate, "
                                     "dataone_cn_sslverify.policy, dataone_cn_sslverify.store"],
            "apache2ctl -t -D DUMP_INCLUDES": ["/usr/sbin/apache2ctl", "-t", "-D", "DUMP_INCLUDES"],
            "status": TOOL + ["status"],
            "diff": TOOL + ["diff"],
        }
        qt: Dict[str, List[float]] = {k: [] for k in quick}
        names = list(quick)
        for i in range(cfg["quick_rounds"]):
            for k in names[i % len(names):] + names[:i % len(names)]:
                qt[k].append(_cmd(quick[k], env)())
        res["quick"] = {k: summary(v) for k, v in qt.items()}
        pm = statistics.median(qt["python3 -c pass"])
        res["quick_ratio"] = {k: statistics.median(v) / pm for k, v in qt.items()}
        res["quick_commands"] = {k: shown(v) for k, v in quick.items()}

        # -- where the time goes ----------------------------------------------------------------
        ops = ["apply", "revert", "apply --no-probe", "revert --no-probe", "status", "diff"]
        rows: Dict[str, List[Dict[str, float]]] = {o: [] for o in ops}
        imports: List[float] = []
        for _ in range(cfg["breakdown_rounds"]):
            p = subprocess.run([PYTHON, f"{REPO}/bench/breakdown.py"] + ops, env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode != 0:
                raise RuntimeError("breakdown.py: " + p.stderr.decode(errors="replace")[-2000:])
            got = json.loads(p.stdout)
            imports.append(got[0].pop("_imports"))
            for o, row in zip(ops, got):
                if row.get("_rc") != 0:
                    raise RuntimeError(f"breakdown {o}: exit {row.get('_rc')}")
                rows[o].append(row)
        bd: Dict[str, Dict[str, float]] = {}
        for o, lst in rows.items():
            keys = sorted({k for r in lst for k in r if not k.startswith("_rc")})
            bd[o] = {k: statistics.median([r.get(k, 0.0) for r in lst]) for k in keys}
        res["breakdown"] = bd
        res["breakdown_imports"] = summary(imports)
        res["breakdown_command"] = shown([PYTHON, f"{REPO}/bench/breakdown.py"] + [f"'{o}'" for o in ops])
        res["loadavg_after"] = loadavg()
    finally:
        inst.cleanup()
        remove_root(root)
    return res
