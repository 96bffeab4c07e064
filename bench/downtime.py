"""(1) Downtime under load: the tool's apply/revert against the CN package's stop / rewrite / start.

One real Apache (harness, webkit-only vhost, its own throwaway PKI) serves four
bounded load generators (bench/loadgen.py, one process each) for the whole run:

    new/browser    new TCP+TLS connection per request, browser UA, no certificate
    new/api        new TCP+TLS connection per request, API UA, trusted client certificate
    keepalive/browser, keepalive/api   the same profiles on reused connections

Timeline: warm-up, a control window with no change, then ROUNDS rounds; each
round runs, one after the other with PAUSE seconds between them (order swapped
every other round):

    tool      `python3 -m dataone_cn_sslverify apply`, then `... revert`
    baseline  `apache2ctl stop` (wait until no process is left, as the init
              script does), write the vhost, `apache2ctl start` (wait until it
              answers): the new block, then the original block again

    graceful  Apache alone, no tool: write the vhost, `apache2ctl configtest`,
              `apache2ctl graceful`, wait until the new generation answers (the
              floor any graceful-reload approach pays)

Every request is attributed to the operation that was running or had just run
(window = from its start to the start of the next operation), so failures that
show up right after an operation returns still count against it.
"""

import bisect
import json
import os
import signal
import subprocess
import time
from typing import Any, Dict, List, Tuple

from common import (BENCH, PYTHON, TOOL, ApacheInstance, loadavg, new_root, remove_root, shown, summary,
                    tool_env)

CLASSES = (("new", "browser"), ("new", "api"), ("keepalive", "browser"), ("keepalive", "api"))


def _start_load(inst: ApacheInstance, root: str, cfg: Dict[str, Any]) -> List[Tuple[str, subprocess.Popen, str]]:
    procs = []
    stop_file = os.path.join(root, "loadgen.stop")
    for mode, profile in CLASSES:
        out = os.path.join(root, f"load-{mode}-{profile}.json")
        argv = [PYTHON, os.path.join(BENCH, "loadgen.py"), "--port", str(inst.https_port), "--sni", inst.server_name,
                "--ca", str(inst.pki.ca_cert), "--mode", mode, "--profile", profile,
                "--workers", str(cfg["workers"]), "--interval", str(cfg["interval"]),
                "--duration", str(cfg["load_cap"]), "--max-requests", str(cfg["max_requests"]),
                "--stop-file", stop_file, "--out", out]
        if profile == "api":
            argv += ["--cert", str(inst.pki.client_pem)]
        procs.append((f"{mode}/{profile}", subprocess.Popen(argv, stdin=subprocess.DEVNULL), out))
    return procs


def _stop_load(procs: List[Tuple[str, subprocess.Popen, str]], root: str) -> Dict[str, Any]:
    open(os.path.join(root, "loadgen.stop"), "w").close()
    for _, p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    docs = {}
    for name, p, out in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        with open(out) as f:
            docs[name] = json.load(f)
    return docs


def _baseline(inst: ApacheInstance, data: bytes) -> Dict[str, Any]:
    """What dataone-cn-os-core does: stop Apache, rewrite the vhost, start Apache (no configtest, no reload)."""
    t0 = time.monotonic()
    stop_s = inst.stop()
    inst.write_vhost(data)
    t1 = time.monotonic()
    inst.start()
    return {"t0": t0, "seconds": time.monotonic() - t0, "rc": 0, "stop_s": stop_s, "start_s": time.monotonic() - t1}


def _floor(inst: ApacheInstance, data: bytes) -> Dict[str, Any]:
    """Apache alone, no tool: write the vhost, `apache2ctl configtest`, `apache2ctl graceful`, wait until served."""
    t0 = time.monotonic()
    inst.write_vhost(data)
    r = inst.configtest()
    if not r.ok:
        raise RuntimeError("configtest failed: " + r.output[-2000:])
    inst.graceful()
    return {"t0": t0, "seconds": time.monotonic() - t0, "rc": 0}


def _proc_children(pid: int) -> Dict[int, str]:
    out = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out[int(e)] = fields[0]
    return out


def observe_graceful(inst: ApacheInstance) -> Dict[str, Any]:
    """One `apache2ctl graceful` under the running load, with Apache's children watched every 5 ms.

    Times are from the moment `apache2ctl graceful` returned: when the last old child had exited
    (zombie or gone), and when the first child of the new generation appeared.
    """
    pid = inst.pid()
    assert pid is not None
    old = set(_proc_children(pid))
    r = inst.apache2ctl("graceful")
    t0 = time.monotonic()
    old_gone = new_seen = None
    while time.monotonic() < t0 + 5 and (old_gone is None or new_seen is None):
        ch = _proc_children(pid)
        now = time.monotonic() - t0
        if old_gone is None and all(ch.get(p, "Z") == "Z" for p in old):
            old_gone = now
        if new_seen is None and set(ch) - old:
            new_seen = now
        time.sleep(0.005)
    return {"ok": r.ok, "t_returned": t0, "old_children_exited_s": old_gone, "new_children_s": new_seen}


def _gap_stats(ok_ends: List[float], windows: List[Tuple[float, float]]) -> Tuple[float, List[float]]:
    """Longest interval with no successful response completing, clipped to each window."""
    per = []
    for ws, we in windows:
        i = bisect.bisect_left(ok_ends, ws)
        prev = ok_ends[i - 1] if i > 0 else ws
        g = 0.0
        j = i
        while j < len(ok_ends) and ok_ends[j] <= we:
            g = max(g, min(ok_ends[j], we) - max(prev, ws))
            prev = ok_ends[j]
            j += 1
        nxt = ok_ends[j] if j < len(ok_ends) else we
        g = max(g, min(nxt, we) - max(prev, ws))
        per.append(g)
    return (max(per) if per else 0.0), per


def analyse(docs: Dict[str, Any], ops: List[Dict[str, Any]], control: Tuple[float, float]) -> Dict[str, Any]:
    methods: Dict[str, List[Tuple[float, float]]] = {"control": [control], "tool": [], "graceful": [], "baseline": []}
    kinds: Dict[str, List[Tuple[float, float]]] = {}
    for op in ops:
        w = (op["t0"], op["window_end"])
        methods[op["method"]].append(w)
        kinds.setdefault(f"{op['method']} {op['op']}", []).append(w)
    out: Dict[str, Any] = {}
    for cname, doc in docs.items():
        recs = doc["records"]  # sorted by start time
        starts = [r[0] for r in recs]
        ok_ends = sorted(r[1] for r in recs if r[2])
        dur = (doc["t_end"] - doc["t_begin"]) or 1
        crow: Dict[str, Any] = {"rate_per_s": len(recs) / dur}
        for mname, wins in list(methods.items()) + list(kinds.items()):
            inwin: List[Any] = []
            ops_with_fail = 0
            for ws, we in wins:
                chunk = recs[bisect.bisect_left(starts, ws):bisect.bisect_left(starts, we)]
                inwin += chunk
                ops_with_fail += any(not r[2] for r in chunk)
            failed = [r for r in inwin if not r[2]]
            errs: Dict[str, int] = {}
            for r in failed:
                errs[r[4]] = errs.get(r[4], 0) + 1
            longest, per = _gap_stats(ok_ends, wins)
            crow[mname] = {
                "sent": len(inwin), "failed": len(failed), "errors": errs,
                "stale_reconnects": sum(1 for r in inwin if r[6]), "retried": sum(1 for r in inwin if r[7]),
                "retried_ok": sum(1 for r in inwin if r[7] and r[2]),
                "api_not_verified": sum(1 for r in inwin if r[2] and cname.endswith("api") and r[8] != "SUCCESS"),
                "longest_gap_s": longest, "per_op_gap_s": summary(per), "ops": len(wins),
                "ops_with_failures": ops_with_fail, "seconds": sum(we - ws for ws, we in wins),
            }
        out[cname] = crow
    return out


def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    root = new_root("downtime")
    inst = ApacheInstance(root, "webkit-only")
    procs: List[Tuple[str, subprocess.Popen, str]] = []
    result: Dict[str, Any] = {"config": dict(cfg)}
    try:
        inst.start()
        env = tool_env(inst)
        original = inst.vhost_bytes()
        # Warm-up (not measured): one apply/revert, which also gives the bytes the baseline writes.
        r = subprocess.run(TOOL + ["apply"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("warm-up apply failed: " + r.stderr.decode(errors="replace")[-2000:])
        applied = inst.vhost_bytes()
        r = subprocess.run(TOOL + ["revert"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0 or inst.vhost_bytes() != original:
            raise RuntimeError("warm-up revert failed: " + r.stderr.decode(errors="replace")[-2000:])
        result["commands"] = {
            "tool apply": shown(TOOL + ["apply"]),
            "tool revert": shown(TOOL + ["revert"]),
            "graceful": "write the vhost; apache2ctl configtest; apache2ctl graceful; wait until a new generation "
                        "answers (Apache alone: the floor of any graceful change)",
            "baseline": "apache2ctl stop; wait until no apache2 process of the instance is left; "
                        "write the vhost (new block, then the original block); apache2ctl start; wait until it answers",
            "load": shown([PYTHON, os.path.join(BENCH, "loadgen.py"), "--mode", "new|keepalive", "--profile",
                           "browser|api", "--workers", str(cfg["workers"]), "--interval", str(cfg["interval"]),
                           "--port", "PORT", "--sni", inst.server_name, "--ca", "ca.crt", "[--cert client.pem]"]),
        }
        result["loadavg_before"] = loadavg()
        procs = _start_load(inst, root, cfg)
        time.sleep(cfg["warmup"])
        c0 = time.monotonic()
        time.sleep(cfg["control"])
        control = (c0, time.monotonic())
        ops: List[Dict[str, Any]] = []
        for i in range(cfg["rounds"]):
            tool = [("tool", "apply", lambda: _tool(env, "apply")), ("tool", "revert", lambda: _tool(env, "revert"))]
            base = [("baseline", "apply", lambda: _baseline(inst, applied)),
                    ("baseline", "revert", lambda: _baseline(inst, original))]
            floor = [("graceful", "apply", lambda: _floor(inst, applied)),
                     ("graceful", "revert", lambda: _floor(inst, original))]
            seq = [tool, floor, base]
            seq = seq[i % 3:] + seq[:i % 3]  # rotate which method goes first
            for method, op, fn in [x for part in seq for x in part]:
                rec = fn()
                rec.update(method=method, op=op, round=i)
                ops.append(rec)
                if method == "tool" and rec["rc"] != 0:
                    rec["stderr_tail"] = rec.get("stderr", "")[-1500:]
                rec.pop("stderr", None)
                time.sleep(cfg["pause"])
        t_last = time.monotonic()  # the last operation's window ends here (the observations below are in none)
        # Why graceful reloads stall under load: watch Apache's children through a few plain reloads.
        result["graceful_observed"] = []
        for _ in range(cfg.get("observe", 5)):
            ob = observe_graceful(inst)
            result["graceful_observed"].append(ob)
            time.sleep(cfg["pause"])
        for k, op in enumerate(ops):
            op["window_end"] = ops[k + 1]["t0"] if k + 1 < len(ops) else t_last
        docs = _stop_load(procs, root)
        procs = []
        result["loadavg_after"] = loadavg()
        if inst.vhost_bytes() != original:
            raise RuntimeError("the vhost is not back to its original bytes after the run")
        result["ops"] = ops
        result["op_seconds"] = {f"{m} {o}": summary([x["seconds"] for x in ops if x["method"] == m and x["op"] == o])
                                for m in ("tool", "graceful", "baseline") for o in ("apply", "revert")}
        result["op_failures"] = [{k: x[k] for k in ("method", "op", "round", "rc", "stderr_tail") if k in x}
                                 for x in ops if x["rc"] != 0]
        result["classes"] = analyse(docs, ops, control)
        for ob in result["graceful_observed"]:  # first success of each class after the reload
            t0 = ob.pop("t_returned")
            ob["first_success_s"] = {k: next((r[1] - t0 for r in d["records"] if r[2] and r[0] > t0 + 0.005), None)
                                     for k, d in docs.items()}
        result["load"] = {k: {"tls": d["tls"], "workers": d["workers"], "interval": d["interval"],
                              "requests": len(d["records"]), "connections": d["connections_opened"],
                              "seconds": d["t_end"] - d["t_begin"]} for k, d in docs.items()}
        log = inst.error_log()
        result["error_log"] = {
            "scoreboard_full": log.count("scoreboard is full"),
            "max_request_workers": log.count("MaxRequestWorkers"),
            "graceful_restarts": log.count("Graceful restart requested"),
            "lines": len(log.splitlines()),
        }
    finally:
        if procs:
            try:
                _stop_load(procs, root)
            except Exception:  # noqa: BLE001 - cleanup must go on
                for _, p, _ in procs:
                    if p.poll() is None:
                        p.kill()
        inst.cleanup()
        remove_root(root)
    return result


def _tool(env: Dict[str, str], op: str) -> Dict[str, Any]:
    t0 = time.monotonic()
    p = subprocess.run(TOOL + ["--json", op], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    rec: Dict[str, Any] = {"t0": t0, "seconds": time.monotonic() - t0, "rc": p.returncode,
                           "stderr": p.stderr.decode(errors="replace")}
    try:
        doc = json.loads(p.stdout.decode())
        rec["result"] = doc.get("result")
        rec["steps_failed"] = [s for s in doc.get("steps", []) if not s.get("ok")]
    except ValueError:
        rec["result"] = None
    return rec
