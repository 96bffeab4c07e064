"""Render bench/RESULTS.md from the results document of bench/run.py (every figure comes from that run)."""

from typing import Any, Dict, List, Optional

GOAL_RATIO = 2.5  # apply within 2.5x the floor of the same change through Apache alone
GOAL_STATUS_S = 1.0
LINEAR_MAX_EXPONENT = 1.2


def ms(x: Optional[float], digits: int = 0) -> str:
    return "-" if x is None else f"{x * 1000:.{digits}f}"


def mmm(s: Dict[str, Any], digits: int = 0, scale: float = 1000.0) -> str:
    if not s or s.get("median") is None:
        return "-"
    return " / ".join(f"{s[k] * scale:.{digits}f}" for k in ("min", "median", "max"))


def mib(kib: Optional[float]) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def table(head: List[str], rows: List[List[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def yes(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


FLAT = 1.15  # y3/y1 below this: the measure does not grow; its exponent is noise


def flat(g: Dict[str, Any]) -> bool:
    r = g.get("ratios") or [None, None]
    return r[0] is not None and r[1] is not None and r[0] * r[1] < FLAT


def exp_s(g: Dict[str, Any]) -> str:
    if flat(g):
        r = g["ratios"]
        return f"flat (+{(r[0] * r[1] - 1) * 100:.0f} %)"
    e = g.get("exponent")
    return "-" if e is None else f"{e:.2f}"


# --------------------------------------------------------------------------------------------------


def machine(doc: Dict[str, Any]) -> str:
    m = doc["machine"]
    s = "## Machine\n\n"
    s += table(["what", "value"], [
        ["nproc", m["nproc"]], ["CPU", m["cpu"]], ["memory", f"{m['memory_gib']} GiB"],
        ["OS / kernel", f"{m['os']} / {m['kernel']}"], ["Apache", m["apache"]], ["OpenSSL", m["openssl"]],
        ["Python", m["python"]], ["tree", m.get("git", "")],
        ["load average at start (1/5/15 min)", " ".join(m["loadavg_at_start"])],
    ])
    s += ("\nThe machine is shared (other sessions run test suites on it); each part records the load "
          "average before and after it, below. Interleaving the compared methods in every round is what "
          "keeps the comparisons fair when the background load changes; absolute figures move with it.\n")
    return s


def goals(doc: Dict[str, Any]) -> str:
    P = doc["parts"]
    rows = []
    if "downtime" in P:
        c = P["downtime"]["classes"]
        nb, na = c["new/browser"]["tool"], c["new/api"]["tool"]
        ok = nb["failed"] == 0 and na["failed"] == 0
        rows.append(["0 failed requests on new connections during apply/revert",
                     f"{nb['failed'] + na['failed']} failed of {nb['sent'] + na['sent']} "
                     f"(baseline stop/start: {c['new/browser']['baseline']['failed'] + c['new/api']['baseline']['failed']} "
                     f"of {c['new/browser']['baseline']['sent'] + c['new/api']['baseline']['sent']})", yes(ok)])
    if "overhead" in P:
        r = P["overhead"]["apply_ratio"]
        rows.append([f"overhead ratio <= {GOAL_RATIO} with the probe (apply / floor, medians)",
                     f"apply {r['apply']:.2f}x, revert {r['revert']:.2f}x "
                     f"(without the probe: {r['apply --no-probe']:.2f}x / {r['revert --no-probe']:.2f}x)",
                     yes(r["apply"] <= GOAL_RATIO and r["revert"] <= GOAL_RATIO)])
    if "scale" in P:
        S = P["scale"]
        worst = []
        for series in ("files", "trees"):
            cores = (["core parse+assess (in-process CPU)"] if series == "files" else ["core locate (in-process CPU)"])
            for k in cores + ["core plan+diff (in-process CPU)", "status: peak RSS (tool)", "diff: peak RSS (tool)"]:
                e = S[series + "_growth"][k].get("exponent")
                if e is not None and not flat(S[series + "_growth"][k]):
                    worst.append((e, f"{series}: {k}"))
        e_max, what = max(worst) if worst else (0.0, "-")
        rows.append([f"linear growth (marginal-cost exponent <= {LINEAR_MAX_EXPONENT}; 1.0 = linear) of the "
                     "tool's own CPU time (`status`/`diff` work, in-process) and peak memory",
                     f"highest: {e_max:.2f} ({what}); see 3.", yes(e_max <= LINEAR_MAX_EXPONENT)])
        st = S["trees"]["1000"]["seconds"]["status"]
        rows.append([f"`status` < {GOAL_STATUS_S:.0f} s on the 1,000-vhost tree",
                     f"{st['median']:.3f} s median wall (max {st['max']:.3f} s; CPU "
                     f"{S['trees']['1000']['cpu']['status']['median']:.3f} s); Apache's own "
                     f"`-t -D DUMP_INCLUDES`: {S['trees']['1000']['seconds']['dump']['median']:.3f} s",
                     yes(st["median"] < GOAL_STATUS_S)])
    if "monitor" in P:
        M = P["monitor"]
        rows.append(["`monitor` (no `--live`) within 3x `python3 -c pass` + one `apache2ctl -t -D DUMP_INCLUDES`",
                     f"{M['seconds']['monitor']['median'] * 1000:.0f} ms median (the installed command, verdict "
                     f"cache hit; the first run after a change {M.get('ratio_miss', 0):.2f} of the budget) against a budget of "
                     f"{M['budget'] * 1000:.0f} ms ({M['ratio']:.2f} of it; minimums: {M['ratio_min']:.2f}; "
                     f"load average {M['loadavg'][0][0]} during the run); see 4.",
                     yes(M["ratio"] <= 1.0)])
    return "## Goals at a glance\n\n" + table(["goal", "measured", "verdict"], rows)


CLASS_NAMES = {
    "new/browser": "new connections, browser UA, no certificate",
    "new/api": "new connections, API UA, trusted client certificate",
    "keepalive/browser": "keep-alive, browser UA, no certificate",
    "keepalive/api": "keep-alive, API UA, trusted client certificate",
}
METHODS = [("control", "no change (control window)"), ("tool", "**tool**: `apply` + `revert`"),
           ("graceful", "Apache alone: configtest + graceful"), ("baseline", "**baseline**: stop, rewrite, start")]


def downtime(d: Dict[str, Any]) -> str:
    cfg = d["config"]
    s = "## 1. Downtime under load\n\n"
    s += (f"One harness Apache (webkit-only CN vhost, mpm_event, Debian defaults, KeepAliveTimeout 5) serves four "
          f"load generators for the whole run (`bench/loadgen.py`, one process per class, {cfg['workers']} workers "
          f"each, a request every {cfg['interval'] * 1000:.0f} ms per worker, worker 0 on TLS 1.3 and worker 1 on "
          f"TLS 1.2; GET /cn/ with `Host`/SNI {'cn.dataone.test'}). Browser classes send WebKit/Blink "
          f"User-Agents without a certificate; API classes send curl / python-requests / d1_libclient_java / "
          f"R User-Agents with the harness's trusted client certificate (asked for it by both the original and "
          f"the new block, through renegotiation on TLS 1.2 and post-handshake auth on TLS 1.3). "
          f"After a {cfg['warmup']:.0f} s warm-up and a {cfg['control']:.0f} s control window, {cfg['rounds']} rounds "
          f"each run the tool's `apply` and `revert`, the same change through Apache alone (configtest + "
          f"graceful) and the current CN package's way (stop, rewrite, start), {cfg['pause']:.0f} s apart, the "
          f"order rotated every round: {cfg['rounds'] * 2} operations per method. A request belongs to the "
          f"operation that was running or had last run when it started.\n\n")
    s += ("A *failed* request got no `200` (connection refused or reset, TLS or HTTP error, timeout 5 s). "
          "Keep-alive clients behave like urllib3 / browsers / HttpClient: a pooled connection that the server "
          "closed while idle is replaced before use (*stale*), and a GET on a reused connection that dies "
          "before any response byte is retried once on a new connection (*retried*); such a request is failed "
          "only if the retry fails too. New-connection clients never retry. The *longest gap* is the longest "
          "time in which no request of the class completed successfully (all its workers together).\n\n")
    rows = []
    for cname, cdesc in CLASS_NAMES.items():
        c = d["classes"][cname]
        for mkey, mdesc in METHODS:
            x = c[mkey]
            errs = ", ".join(f"{k} {v}" for k, v in sorted(x["errors"].items(), key=lambda kv: -kv[1])) or "-"
            ka = f"{x['stale_reconnects']} / {x['retried']} ({x['retried_ok']})" if cname.startswith("keep") else "-"
            pct = 100.0 * x["failed"] / x["sent"] if x["sent"] else 0.0
            per = mmm(x["per_op_gap_s"]) if mkey != "control" else "-"
            rows.append([cname if mkey == "control" else "", mdesc, x["sent"], f"**{x['failed']}**", f"{pct:.2f} %",
                         f"**{ms(x['longest_gap_s'])}**", per, ka, errs])
    s += table(["class", "method", "requests sent", "failed", "failed %", "longest gap (ms)",
                "per-operation longest gap min / median / max (ms)", "keep-alive stale / retried (retry ok)",
                "failures by cause"], rows)
    s += "\nSplit by operation (all four classes added up; longest gap = the worst class):\n\n"
    rows = []
    for m in ("tool", "graceful", "baseline"):
        for op in ("apply", "revert"):
            key = f"{m} {op}"
            sent = sum(d["classes"][c][key]["sent"] for c in CLASS_NAMES)
            failed = sum(d["classes"][c][key]["failed"] for c in CLASS_NAMES)
            newf = sum(d["classes"][c][key]["failed"] for c in ("new/browser", "new/api"))
            gap = max(d["classes"][c][key]["longest_gap_s"] for c in CLASS_NAMES)
            rows.append([key, mmm(d["op_seconds"][key]), sent, failed, newf, ms(gap)])
    s += table(["operation", "its wall time min / median / max (ms)", "requests sent", "failed", "of them on new connections",
                "longest gap (ms)"], rows)
    L = d["load"]
    nv = sum(d["classes"][k][m]["api_not_verified"] for k in ("new/api", "keepalive/api") for m in ("control", "tool", "graceful", "baseline"))
    s += (f"\nEvery successful API response is checked for the server's `SSL_CLIENT_VERIFY` (the harness echoes it "
          f"in `X-Test-Client-Verify`): {nv} were not `SUCCESS`, so the client certificate was asked for and "
          f"verified on every API request, through each reload.\n")
    s += "\nAchieved load (whole run): " + ", ".join(
        f"{k} {v['requests'] / v['seconds']:.0f} req/s over {v['connections']} connections" for k, v in L.items())
    s += (f". Load average before / after: {' '.join(d['loadavg_before'])} / {' '.join(d['loadavg_after'])}. "
          f"Apache error log: {d['error_log']['scoreboard_full']} 'scoreboard is full', "
          f"{d['error_log']['max_request_workers']} MaxRequestWorkers messages.")
    if d.get("op_failures"):
        s += f" Operations that exited non-zero: {len(d['op_failures'])} (see results.json)."
    s += "\n\nCommands:\n\n"
    for k, v in d["commands"].items():
        s += f"* {k}: `{v}`\n"
    # interpretation
    c = d["classes"]

    def worst(method: str, stat: str) -> float:
        return max(c[k][method]["per_op_gap_s"][stat] or 0.0 for k in CLASS_NAMES)

    tool_failed = sum(c[k]["tool"]["failed"] for k in CLASS_NAMES)
    base_failed = sum(c[k]["baseline"]["failed"] for k in CLASS_NAMES)
    base_sent = sum(c[k]["baseline"]["sent"] for k in CLASS_NAMES)
    s += "\n**Reading it.** "
    s += (f"The tool failed {tool_failed} requests in {cfg['rounds'] * 2} operations; the stop/start baseline failed "
          f"{base_failed} of {base_sent} (refused while Apache is down, reset when `stop` cuts requests in flight). "
          f"Per operation, the longest gap (worst class) is typically {ms(worst('tool', 'median'))} ms with the tool, "
          f"{ms(worst('graceful', 'median'))} ms for Apache's graceful alone and {ms(worst('baseline', 'median'))} ms "
          f"for stop/start (worst operation: {ms(worst('tool', 'max'))} / {ms(worst('graceful', 'max'))} / "
          f"{ms(worst('baseline', 'max'))} ms). ")
    if worst("tool", "median") > worst("baseline", "median"):
        s += (f"So the tool's typical gap is *longer* than stop/start's, and it is Apache's, not the tool's: the "
              f"same graceful reload without the tool has the same worst case ({ms(worst('graceful', 'max'))} ms vs "
              f"{ms(worst('tool', 'max'))} ms); how often a reload hits it varies from run to run. ")
    else:
        s += (f"The worst case is Apache's, not the tool's: the same graceful reload without the tool has it too "
              f"({ms(worst('graceful', 'max'))} ms vs {ms(worst('tool', 'max'))} ms); how often a reload hits it "
              f"varies with the load and from run to run. ")
    s += ("During a graceful stall nothing fails, requests wait: the listening sockets stay open (the kernel "
          "queues new connections, up to `ListenBacklog`, 511) while no child accepts; stop/start is quicker "
          "end to end on this small configuration (~0.2-0.3 s) but drops every request that arrives meanwhile. ")
    obs = d.get("graceful_observed", [])

    def first_ok(ob: Dict[str, Any]) -> Optional[float]:
        return min((v for v in ob["first_success_s"].values() if v is not None), default=None)

    if obs:
        each = "; ".join(f"{ms(ob['old_children_exited_s'])} / {ms(ob['new_children_s'])} / {ms(first_ok(ob))}"
                         for ob in obs)
        stalled = sum(1 for ob in obs if (ob["new_children_s"] or 0) > 0.5)
        s += (f"Why a graceful reload stalls under load, observed in this run: {len(obs)} plain `apache2ctl "
              f"graceful` under the same load, Apache's children polled every 5 ms; per reload, ms after the "
              f"command returned until the old children had exited / the first child of the new generation "
              f"existed / the first request started after the reload succeeded: {each} ({stalled} of {len(obs)} "
              "stalled). mpm_event's parent reaps exited children and starts the new generation in its "
              "maintenance loop, whose wait (`ap_wait_or_timeout` in server/mpm_common.c) sleeps a whole second "
              "(`apr_sleep(1000000)`) when no child has exited yet. If the old children are gone by the time the "
              "parent re-enters that loop, the new generation starts at once (no stall); if they are still finishing a request, nothing accepts until the sleep ends, ~1 s. What "
              "would shorten the graceful stall: nothing the tool controls (one graceful per change, none when "
              "there is nothing to do); it is upstream mpm_event behaviour, the same for any graceful-reload tool.")
    s += "\n"
    return s


def overhead(o: Dict[str, Any]) -> str:
    s = "## 2. Overhead\n\n"
    s += (f"Idle server (no load), harness Apache with the webkit-only vhost. {o['config']['rounds']} rounds; each "
          "round runs the floor, `apply`/`revert` with the probe and `apply --no-probe`/`revert --no-probe`, with "
          "a floor between every apply and its revert, the order rotated every round. Wall time of the whole "
          "command as an operator runs it: the installed launcher (`#!/usr/bin/python3 -IS`; here a copy of "
          "`sbin/dataone-cn-sslverify` whose module dir is this clone), byte-code cached as on an installed "
          "package. Ratio = median / median of the floor.\n\n")
    rows = []
    fm = o["apply"]["floor"]["median"]
    fmin = o["apply"]["floor"]["min"]
    for k in ("floor", "apply", "revert", "apply --no-probe", "revert --no-probe"):
        ratio = "1.00" if k == "floor" else f"**{o['apply_ratio'][k]:.2f}**"
        rows.append([k, o["apply"][k]["n"], mmm(o["apply"][k]), ratio, f"{o['apply'][k]['min'] / fmin:.2f}",
                     f"`{o['apply_commands'][k]}`"])
    s += table(["what", "runs", "wall time min / median / max (ms)", f"ratio of medians (floor {ms(fm)} ms)",
                "ratio of minimums", "command"], rows)
    s += f"\n`status` and `diff` against starting Python ({o['config']['quick_rounds']} rounds, rotated):\n\n"
    rows = []
    for k, v in o["quick"].items():
        rows.append([k, v["n"], mmm(v, 1), f"{o['quick_ratio'][k]:.1f}",
                     f"{v['min'] / o['quick']['python3 -c pass']['min']:.1f}", f"`{o['quick_commands'][k]}`"])
    s += table(["what", "runs", "wall time min / median / max (ms)", "ratio of medians to `python3 -c pass`",
                "ratio of minimums", "command"], rows)
    bd = o["breakdown"]
    s += (f"\nWhere the time goes (`{o['breakdown_command']}`, {o['config']['breakdown_rounds']} runs, median "
          "exclusive ms per component, in-process timers around the package's own functions; the interpreter "
          "start and the imports come before and are not in `_total`: importing took "
          f"{ms(o['breakdown_imports']['median'])} ms):\n\n")
    ops = ["apply", "revert", "apply --no-probe", "status", "diff"]
    comps = sorted({k for op in ops for k in bd[op] if not k.startswith("_")},
                   key=lambda k: -bd["apply"].get(k, 0.0))
    rows = [[k] + [ms(bd[op].get(k), 1) if k in bd[op] else "" for op in ops] for k in comps
            if max(bd[op].get(k, 0.0) for op in ops) >= 0.0005]
    rows.append(["**total in-process**"] + [f"**{ms(bd[op]['_total'], 1)}**" for op in ops])
    s += table(["component"] + [f"`{op}`" for op in ops], rows)
    s += "\n" + overhead_reading(o)
    s += f"\nLoad average before / after: {' '.join(o['loadavg_before'])} / {' '.join(o['loadavg_after'])}.\n"
    return s


def _bd(o: Dict[str, Any], op: str, key: str) -> float:
    return float(o["breakdown"][op].get(key, 0.0))


def _live(o: Dict[str, Any], op: str) -> float:
    """The live check's time in ``op``: its probes and reading the required paths."""
    return sum(v for k, v in o["breakdown"][op].items() if k.startswith(("live check:", "probe: live TLS clients")))


def overhead_reading(o: Dict[str, Any]) -> str:
    fm = o["apply"]["floor"]["median"]
    am = o["apply"]["apply"]["median"]
    py = o["quick"]["python3 -c pass"]["median"]
    # start-up costs: fastest runs (least disturbed by the background load)
    imp = o["quick"]["import the package"]["min"] - o["quick"]["python3 -c pass"]["min"]
    dump = _bd(o, "apply", "apache2ctl -t -D DUMP_INCLUDES")
    gr = _bd(o, "apply", "apache2ctl -k graceful")
    probe = _live(o, "apply")
    store = sum(v for k, v in o["breakdown"]["apply"].items() if k.startswith("store:") or k.startswith("write vhost"))
    ratio = o["apply_ratio"]["apply"]
    rmin = o["apply"]["apply"]["min"] / o["apply"]["floor"]["min"]
    s = "**Reading it.** "
    s += (f"The floor is {ms(fm)} ms: `apache2ctl configtest`, then `apache2ctl graceful` (Debian's script "
          f"config-tests again before it signals Apache: three parses of the configuration in all), and the new "
          f"generation coming up. `apply` ({ms(am)} ms) parses the configuration twice. First `-t -D "
          f"DUMP_INCLUDES` ({ms(dump)} ms in-process): it is the before-change config test and the list of "
          f"files `locate` reads, and the entry point starts it before the imports (`prefetch`), so Apache "
          f"parses on one core while Python imports the package on the other ({ms(imp)} ms, fastest run). After "
          f"the write, `apache2ctl -k graceful` ({ms(gr)} ms): the changed configuration's test and the signal in "
          f"one (httpd refuses to signal a configuration that fails; docs/design.md, \"Two Apache parses per "
          f"change\"). On top of the floor's work: starting Python ({ms(py)} ms), the crash-safe store (backup, "
          f"saved block, journal, atomic writes, each fsynced: {ms(store)} ms), and the live check "
          f"({_bd(o, 'apply', '_probe_rows'):.0f} probes, {ms(probe)} ms; what the reload does not change -- "
          f"certificates, required paths, the probe stack's import and client contexts -- is prepared in a "
          f"thread while Apache reloads). ")
    if ratio <= GOAL_RATIO:
        s += (f"`apply` is {ratio:.2f}x the floor (ratio of minimums {rmin:.2f}): within {GOAL_RATIO}x. The in-process "
              f"breakdown above runs `cli.main` after importing, so its dump is not the prefetched one and its "
              f"sum is not the command's wall time.\n")
    else:
        s += (f"`apply` is {ratio:.2f}x the floor (ratio of minimums {rmin:.2f}), above {GOAL_RATIO}x: the live "
              f"check ({ms(probe)} ms, 28 TLS connections of two stacks on this machine's two cores) is what is "
              f"left beyond the floor's own work and starting Python.\n")
    s += (f"\n`status` and `diff` are {o['quick_ratio']['status']:.1f}x and {o['quick_ratio']['diff']:.1f}x the cost "
          f"of starting Python: importing the package is {o['quick_ratio']['import the package']:.1f}x on its own "
          f"(importing everything but `probe` is {o['quick_ratio']['import all but probe']:.1f}x) and Apache's "
          f"`-t -D DUMP_INCLUDES` adds {ms(o['quick']['apache2ctl -t -D DUMP_INCLUDES']['median'])} ms; the "
          "package's own work on this 190-line vhost is a few ms.\n")
    return s


def scale(S: Dict[str, Any]) -> str:
    s = "## 3. Scale\n\n"
    s += ("Instances are built but not started (`status` and `diff` only read the configuration; `status` then "
          "reports Apache not running). Filler for the vhost-file series: 13-line units (a comment, a "
          "`<Location>` with Require/Header/Expires, a `RedirectMatch`, a `<LocationMatch>` with a Header, a "
          "commented-out `<Location>`), half before and half after the client-verification block inside the "
          "SSL vhost; the file stays valid for Apache. Config trees: the CN vhost file plus N-1 "
          "`sites-available/siteNNNN.conf` enabled by symlink, 9 in 10 of them SSL name-based vhosts on the CN's "
          "port sharing one self-signed certificate, 1 in 10 plain-HTTP redirects; exactly one CN vhost. "
          f"{S['config']['rounds']} rounds per size ({S['config']['rounds_large']} at 100k lines), the three "
          "commands rotated. Wall time, and CPU time split into the tool's own process and Apache's (its "
          "`apache2ctl -t -D DUMP_INCLUDES` child), from getrusage: CPU time barely moves with the machine's "
          "background load. The growth verdict uses the CPU time of the tool's own work measured in-process "
          "(`core`, best of 5) and peak RSS: the tool's own process (`VmHWM`), Apache's from GNU time.\n\n")
    def cells(m: Dict[str, Any]) -> List[str]:
        sec, r = m["seconds"], m["maxrss_kib"]
        return [mmm(sec["dump"]), ms(m["cpu"]["dump"]["median"]),
                mmm(sec["status"]), f"{ms(m['own_cpu']['status']['median'])} + {ms(m['children_cpu']['status']['median'])}",
                mmm(sec["diff"]), f"{ms(m['own_cpu']['diff']['median'])} + {ms(m['children_cpu']['diff']['median'])}",
                f"{mib(r['status']['median'])} / {mib(r['diff']['median'])} / {mib(r['dump']['median'])}"]

    head = ["`-t -D DUMP_INCLUDES` wall (ms)", "its CPU (ms)", "`status` wall (ms)", "its CPU: tool + Apache (ms)",
            "`diff` wall (ms)", "its CPU: tool + Apache (ms)", "peak RSS `status` / `diff` / Apache (MiB)"]
    rows = [[f"{int(n):,}", f"{m['bytes'] / 1024:.0f} KiB"] + cells(m)
            + [f"{ms(m['core_seconds']['parse+assess'], 1)} / {ms(m['core_seconds']['plan+diff'], 1)}"]
            for n, m in S["files"].items()]
    s += "**Vhost file size**\n\n" + table(["lines", "size"] + head + ["core CPU: parse+assess / plan+diff (ms)"], rows)
    rows = [[f"{int(n):,}", m["ssl_vhosts"]] + cells(m)
            + [f"{ms(m['core_seconds']['locate'], 1)} / {ms(m['core_seconds']['plan+diff'], 1)}"]
            for n, m in S["trees"].items()]
    s += "\n**Config tree (enabled vhosts)**\n\n" + table(["enabled vhosts", "of them SSL"] + head
                                                           + ["core CPU: locate / plan+diff (ms)"], rows)
    s += ("\n**How cost grows.** Exponent = log((y3-y1)/(y2-y1)) / log((x3-x1)/(x2-x1)) over the three sizes, on "
          "medians: the growth of the *marginal* cost with fixed start-up costs cancelled (1.0 linear, 2.0 "
          "quadratic; '-' when noise made y2 <= y1; 'flat' when the largest size costs less than 15 % more than "
          "the smallest, where the exponent would only measure noise). Ratios: y2/y1 and y3/y2 (the size grows 10x per step). "
          "Per-unit cost: slope of the least-squares line through the three medians.\n\n")
    rows = []
    for series, unit, per in (("files", "line", 1000.0), ("trees", "vhost", 1.0)):
        g = S[series + "_growth"]
        for k, v in g.items():
            is_rss = "RSS" in k
            slope = v["fit_b"] * per
            u = "1k lines" if per > 1 else unit
            slope_s = f"{slope:.1f} KiB per {u}" if is_rss else f"{slope * 1000:.2f} ms per {u}"
            ratios = " / ".join("-" if x is None else f"{x:.2f}" for x in v["ratios"])
            rows.append([series, k, exp_s(v), ratios, slope_s])
    s += table(["series", "measure", "exponent", "ratios", "per-unit cost"], rows)
    s += "\n" + scale_reading(S)
    s += f"\nLoad average before / after: {' '.join(S['loadavg_before'])} / {' '.join(S['loadavg_after'])}.\n"
    s += "\nCommands:\n\n" + "".join(f"* {k}: `{v}`\n" for k, v in S["commands"].items())
    return s


def scale_reading(S: Dict[str, Any]) -> str:
    fg, tg = S["files_growth"], S["trees_growth"]
    big = S["files"]["100000"]
    t1000, t1 = S["trees"]["1000"], S["trees"]["1"]
    per_vhost = (t1000["own_cpu"]["status"]["median"] - t1["own_cpu"]["status"]["median"]) / 999
    own = "status: tool's own CPU"
    e_on = fg["core parse+assess (in-process CPU)"].get("exponent") or 0.0
    e_off = fg["core parse+assess, gc off (in-process CPU)"].get("exponent") or 0.0
    gc_note = ": the GC's rescans of the growing tree make the difference" if e_off < e_on - 0.05 else ""
    s = "**Reading it.** "
    s += (f"The tool's own CPU for `status` grows with exponent {exp_s(fg[own])} "
          f"in file size and {exp_s(tg[own])} in vhost count; Apache's parse "
          f"{exp_s(fg['-t -D DUMP_INCLUDES: CPU'])} / {exp_s(tg['-t -D DUMP_INCLUDES: CPU'])}. Whole-command "
          f"figures carry ~70 ms of Python start-up and imports, so their first step (1k->10k lines, 1->100 "
          f"vhosts) adds only a few ms and their exponent is at the mercy of that noise; the in-process CPU of the "
          f"tool's own work is the precise measure: parse + assess {exp_s(fg['core parse+assess (in-process CPU)'])} "
          f"in file size ({exp_s(fg['core parse+assess, gc off (in-process CPU)'])} with the cyclic GC off{gc_note}), locate (read + parse + "
          f"assess every loaded file) {exp_s(tg['core locate (in-process CPU)'])} in vhost count. Memory is linear: "
          f"{fg['status: peak RSS (tool)']['fit_b'] * 1000:.0f} KiB of peak RSS per 1,000 lines (the lossless tree "
          f"keeps objects per line plus its tokens), {mib(big['maxrss_kib']['status']['median'])} MiB at 100k lines; "
          f"in vhost count the tool's memory hardly moves (each file is parsed and dropped) while Apache's grows "
          f"{tg['-t -D DUMP_INCLUDES: peak RSS']['fit_b']:.0f} KiB per vhost. The diff step (plan + "
          f"`policy.patch_diff`, difflib over the block and its context only) has exponent "
          f"{exp_s(fg['core plan+diff (in-process CPU)'])} "
          f"({ms(big['core_seconds']['plan+diff'])} ms CPU at 100k lines against "
          f"{ms(big['core_seconds']['parse+assess'])} ms for parse + assess). "
          f"On the 1,000-vhost tree `status` takes {t1000['seconds']['status']['median']:.3f} s wall "
          f"({t1000['own_cpu']['status']['median']:.3f} s CPU in the tool, "
          f"{t1000['children_cpu']['status']['median']:.3f} s in Apache's `-t -D DUMP_INCLUDES`, which takes "
          f"{t1000['seconds']['dump']['median']:.3f} s wall on its own: Apache parses all 1,000 vhosts; `-t` does "
          f"not load their certificates -- a garbage certificate file passes it); the tool's share is reading and "
          f"parsing every file Apache lists, ~{per_vhost * 1e6:.0f} us CPU per extra vhost file "
          f"({ms(t1000['core_seconds']['locate'])} ms for `locate` in-process). Wall times are "
          f"2-3x the CPU times here because the machine's two cores were shared (load average above).\n")
    return s


def problems(doc: Dict[str, Any]) -> str:
    P = doc["parts"]
    s = "## Problems found in the package code, with proposed fixes\n\n"
    s += "These are reports for the module owners; the benchmarks do not change package code.\n\n"
    o = P.get("overhead")
    S = P.get("scale")
    n = 1
    if o:
        sh = _bd(o, "apply", "sh: source envvars for the pid file (apachectl._envvar)")
        pmin = o["quick"]["python3 -c pass"]["min"]
        imp = o["quick"]["import the package"]["min"] - pmin
        imp_np = o["quick"]["import all but probe"]["min"] - pmin
        if sh > 0.003:  # memoised per process since the first run of this benchmark
            s += (f"{n}. **`sh` sourcing `envvars` (apachectl.py `_envvar`).** {ms(sh)} ms per apply. Fix: read "
                  f"each variable once per process.\n")
            n += 1
        pr = _live(o, "apply")
        calls, rows_n = _bd(o, "apply", "_probe_calls"), _bd(o, "apply", "_probe_rows")
        if calls and pr > 0.05:
            s += (f"{n}. **The live check is still the largest single cost of `apply`/`revert` (livecheck.py "
                  f"`run`).** One run per transaction, {rows_n / calls:.0f} probes (each distinct wire behaviour "
                  f"once, two connections per core at a time): {ms(pr)} ms of the {ms(o['breakdown']['apply']['_total'])} ms in-process "
                  f"total; `apply` with it is {o['apply_ratio']['apply']:.2f}x the floor, without it "
                  f"{o['apply_ratio']['apply --no-probe']:.2f}x. What is left: the browser probes could share "
                  f"one keep-alive connection per TLS version while none is asked (a request on any of them shows "
                  f"in the handshake messages), saving about a fifth of the connections; each probe is about 2 ms of "
                  f"client CPU (OpenSSL 3's handshake) and 1-2 ms of Apache's, on the same two cores.\n")
            n += 1
        if imp - imp_np > 0.005:
            s += (f"{n}. **`status`/`diff` import more than they use.** Importing the package costs {ms(imp)} ms "
                  f"over a bare interpreter, everything but the probe stack {ms(imp_np)} ms (fastest runs).\n")
            n += 1
    if S and _superlinear(S["files_growth"]["core plan+diff (in-process CPU)"]):
        big = S["files"]["100000"]
        fg = S["files_growth"]
        s += (f"{n}. **`diff` is superlinear (policy.py `unified_diff`).** It runs `difflib.unified_diff` over the "
              f"whole file: core plan + diff exponent {exp_s(fg['core plan+diff (in-process CPU)'])}, "
              f"{ms(big['core_seconds']['plan+diff'])} ms at 100k lines (parse + assess: "
              f"{ms(big['core_seconds']['parse+assess'])} ms); its cost per line rises from "
              f"{S['files']['10000']['core_seconds']['plan+diff'] / 10000 * 1e6:.2f} us at 10k lines to "
              f"{big['core_seconds']['plan+diff'] / 100000 * 1e6:.2f} us at 100k; `diff` is "
              f"{big['seconds']['diff']['median']:.2f} s vs "
              f"`status` {big['seconds']['status']['median']:.2f} s there. The change is one splice whose lines "
              f"are known (`Patch.first_line`..`last_line`): build the single hunk directly from those lines "
              f"plus 3 lines of context, or run difflib on that window only and shift the `@@` line numbers. "
              f"The diff step's cost then no longer depends on file size.\n")
        n += 1
        s += (f"{n}. **Memory per line of the lossless tree (apacheconf.py).** Peak RSS grows "
              f"{fg['status: peak RSS (tool)']['fit_b'] * 1000:.0f} KiB per 1,000 lines ({mib(big['maxrss_kib']['status']['median'])} "
              f"MiB for a {big['bytes'] / 1048576:.1f} MiB file): `LogicalLine` and node dataclasses carry a "
              f"`__dict__` each, and `LogicalLine.text` (a regex substitution + strip) is recomputed on every "
              f"access (twice or more per line during parse + assess). Fix: `__slots__` on `LogicalLine`, "
              f"`Blank`, `Comment`, `Directive`, `Section` (written by hand: `dataclass(slots=True)` needs 3.10) "
              f"and compute `text` once in `_logical_lines`. Linear either way; this is a constant factor.\n")
        n += 1
    return s


def render(doc: Dict[str, Any]) -> str:
    P = doc["parts"]
    s = "# Benchmarks\n\n"
    s += (f"Written by `make bench` (`bench/run.py`) on {doc['started']} in {doc.get('wall_seconds', 0):.0f} s"
          + (" -- **quick mode: few rounds, a smoke test of the benchmarks, not a result**" if doc.get("quick") else "")
          + ". Raw figures: `bench/results.json`. Rerun everything with `make bench`; re-render this file from "
          "the raw figures with `python3 bench/run.py --report-only`. Figures are min / median / max unless "
          "said otherwise; times are wall-clock.\n\n")
    s += goals(doc) + "\n" + machine(doc) + "\n"
    if "downtime" in P:
        s += downtime(P["downtime"]) + "\n"
    if "overhead" in P:
        s += overhead(P["overhead"]) + "\n"
    if "scale" in P:
        s += scale(P["scale"]) + "\n"
    if "monitor" in P:
        s += monitor_section(P["monitor"]) + "\n"
    s += problems(doc)
    s += ("\n## Files\n\n"
          "* `bench/run.py` -- runs the parts, writes `results.json` and this file (`--quick`, `--only`, `--report-only`)\n"
          "* `bench/downtime.py`, `bench/loadgen.py` -- part 1 and its bounded load generator\n"
          "* `bench/overhead.py`, `bench/breakdown.py` -- part 2 and the per-component timing\n"
          "* `bench/scale.py`, `bench/rusage_run.py`, `bench/core_time.py` -- part 3, the peak-memory / CPU wrapper "
          "and the in-process CPU of the tool's own work\n"
          "* `bench/monitor.py` -- part 4, the cost of `monitor` against its budget\n"
          "* `bench/common.py` -- shared helpers (the tool's command line, timing, machine facts)\n"
          "* `bench/report.py` -- this report\n")
    return s


def monitor_section(M: Dict[str, Any]) -> str:
    """Part 4: `monitor`, run every minute by Check_MK/Nagios, against 3x Python's start-up + one Apache parse."""
    S = M["seconds"]
    s = "## 4. Monitor\n\n"
    s += (f"Idle harness Apache (webkit-only vhost, the policy applied with the tool's `apply`). {M['config']['rounds']} "
          "rounds, every command once per round in a rotated order; wall time of the whole command as the Check_MK "
          "agent or Nagios runs it: the installed launcher (`#!/usr/bin/python3 -IS`; here "
          f"{M.get('launcher', 'the launcher')}), byte-code cached as on an installed package. `monitor` is a hit of "
          "the verdict cache (nothing changed since the last run: the steady state); the miss is the first run after "
          "a change (the cache's key differs in the last file it records, so the run reads it, stats every file and "
          "then does the full work, saving the verdict again). Budget = 3 x median(`python3 -c pass`) + "
          "median(`apache2ctl -t -D DUMP_INCLUDES`): the one Apache parse `monitor` makes is both the list of loaded "
          "files and the configtest verdict.\n\n")
    rows = [[k, S[k]["n"], mmm(S[k], 1), f"`{M['commands'][k]}`"] for k in S]
    s += table(["what", "runs", "wall time min / median / max (ms)", "command"], rows)
    sp = M["split"]
    miss = "monitor, first run after a change (miss)"
    s += (f"\n**Budget**: {M['budget'] * 1000:.0f} ms (medians; minimums: {M['budget_min'] * 1000:.0f} ms). "
          f"`monitor` takes {S['monitor']['median'] * 1000:.0f} ms, **{M['ratio']:.2f}** of the budget "
          f"(minimums: {M['ratio_min']:.2f}); through `python3 -m` (with the site module) "
          f"{S['monitor (python3 -m)']['median'] * 1000:.0f} ms. The first run after a change takes "
          f"{S[miss]['median'] * 1000:.0f} ms ({M['ratio_miss']:.2f} of the budget), once. Same output on a hit, "
          f"a miss and through `python3 -m`: {'yes' if M.get('same_output') else 'NO'}. "
          f"In one process, a full run (median of 7): imports {sp['imports'] * 1000:.0f} ms, "
          f"gathering the observations {sp['gather'] * 1000:.0f} ms (of which the dump is about "
          f"{sp['dump'] * 1000:.0f} ms), judging and formatting {sp['judge+format'] * 1000:.1f} ms. `ssl` imported: "
          f"{'yes' if sp['ssl_imported'] else 'no'}; the probe stack imported: "
          f"{'yes' if sp['probe_imported'] else 'no'}. `--live` reuses its cached verdict "
          f"({S['monitor --live (cached)']['median'] * 1000:.0f} ms); probing every time costs "
          f"{S['monitor --live --cache 0']['median'] * 1000:.0f} ms.\n\n")
    fast = S["import what the fast path loads"]["median"] - S["python3 -c pass"]["median"]
    imp = S["import what monitor loads"]["median"] - S["python3 -c pass"]["median"]
    s += ("**Reading it.** A hit is Python's start-up, the dump, and a few milliseconds: the fast path "
          f"(`entry`, `monitor_fast`) imports {max(fast, 0) * 1000:.0f} ms beyond starting Python (no `argparse`, `re`, "
          f"`json`, `typing`, `subprocess`: the dump is run with `os.posix_spawn`) where the full path imports "
          f"{imp * 1000:.0f} ms; it reads one file of the state dir under a shared lock and stats every file the "
          "verdict was computed from (docs/monitoring.md, \"The verdict cache\"). The launcher's `-S` saves the site "
          "module's `.pth` processing on every start.\n\n")
    s += "What it printed (last round):\n\n```\n"
    for k in ("monitor", "monitor --format checkmk", "monitor --live (cached)"):
        s += f"$ {M['commands'][k]}\n{M['outputs'].get(k, '')}"
    s += "```\n"
    lb, la = M["loadavg"]
    s += f"\nLoad average before / after: {' '.join(lb)} / {' '.join(la)}.\n"
    return s


def _superlinear(growth: dict) -> bool:
    """Is a growth fit's exponent above the goal's 1.2 (None or noise: not shown as a problem)?"""
    e = growth.get("exponent")
    return isinstance(e, (int, float)) and e > 1.2
