"""(3) Scale: time and peak memory of `status` and `diff` as the configuration grows.

Two series, each on a harness instance that is built but not started (status
and diff only read the configuration; Apache's own share is
`apache2ctl -t -D DUMP_INCLUDES`, measured on its own in the same rounds):

* vhost file: the realistic CN vhost (webkit-only) padded to 1k, 10k and 100k
  lines with realistic filler -- commented blocks, <Location>/<LocationMatch>
  with Require/Header/Expires, RedirectMatch, commented-out sections -- half
  before and half after the client-verification block, inside the SSL vhost;
* config tree: 1, 100 and 1,000 enabled vhosts -- the CN vhost file plus
  sites-available/siteNNNN.conf files enabled by symlink (a2ensite), 90 % SSL
  name-based vhosts on the same port sharing one self-signed certificate,
  10 % plain-HTTP redirect vhosts; exactly one CN vhost.

Wall and CPU time (user + system of the command and its children, wait4)
of each run; peak memory of the tool's own process from bench/rusage_run.py
(VmHWM), Apache's from GNU time on the dump.
"""

import json
import math
import os
import subprocess
from typing import Any, Dict, List, Tuple

from common import (PYTHON, REPO, ApacheInstance, loadavg, new_root, remove_root, run_measured, shown, summary,
                    tool_env)

BEFORE_MARK = b"\t#   Client certificates and Safari:"
AFTER_MARK = b"\tSSLVerifyDepth 10\n"


def filler(i: int) -> bytes:
    """One unit of realistic vhost filler (13 lines)."""
    return (
        f"\t# start-legacy-{i}: redirects and cache rules for retired service {i} (ticket #{1000 + i})\n"
        f"\t<Location /legacy/svc{i}>\n"
        f"\t\tRequire all granted\n"
        f"\t\tHeader set X-Legacy-Service \"svc{i}\"\n"
        f"\t\tExpiresActive On\n"
        f"\t\tExpiresDefault \"access plus 1 hour\"\n"
        f"\t</Location>\n"
        f"\tRedirectMatch 301 ^/old/svc{i}(/.*)?$ https://archive.dataone.org/svc{i}$1\n"
        f"\t<LocationMatch \"^/cn/v[12]/legacy{i}/\">\n"
        f"\t\tHeader set Cache-Control \"no-cache, no-store, must-revalidate\"\n"
        f"\t</LocationMatch>\n"
        f"\t#<Location /disabled/svc{i}>\n"
        f"\t#\tRequire all denied\n"
    ).encode()


def padded_vhost(base: bytes, lines: int) -> bytes:
    """base with filler inserted around the client-verification block until it has `lines` lines."""
    need = lines - base.count(b"\n")
    units, left = [], need
    i = 0
    while left > 0:
        u = filler(i)
        if u.count(b"\n") > left:  # the last, partial unit: comment lines (always valid)
            u = b"".join(f"\t# filler {i}.{k}\n".encode() for k in range(left))
        units.append(u)
        left -= u.count(b"\n")
        i += 1
    half = len(units) // 2
    b = base.index(BEFORE_MARK)
    a = base.index(AFTER_MARK) + len(AFTER_MARK)
    out = base[:b] + b"".join(units[:half]) + base[b:a] + b"".join(units[half:]) + base[a:]
    assert out.count(b"\n") == lines, (out.count(b"\n"), lines)
    return out


def site_conf(i: int, inst: ApacheInstance, crt: str, key: str, ssl: bool) -> str:
    name = f"site{i:04d}.example.test"
    if not ssl:
        return (f"# site{i:04d}.conf -- plain-HTTP front of {name}: everything goes to https\n"
                f"<VirtualHost *:{inst.http_port}>\n"
                f"\tServerName {name}\n"
                f"\tServerAlias www.{name}\n"
                f"\tDocumentRoot {inst.docroot}\n"
                f"\tRedirect permanent / https://{name}/\n"
                f"</VirtualHost>\n")
    return (f"# site{i:04d}.conf -- {name}: a project site hosted beside the CN (test tree)\n"
            f"<IfModule mod_ssl.c>\n"
            f"<VirtualHost *:{inst.https_port}>\n"
            f"\tServerName {name}\n"
            f"\tServerAlias www.{name}\n"
            f"\tServerAdmin webmaster@{name}\n"
            f"\tDocumentRoot {inst.docroot}\n"
            f"\tCustomLog {inst.log_dir}/sites-access.log vhost_combined\n"
            f"\n"
            f"\t<Location /private>\n"
            f"\t\tRequire ip 127.0.0.1\n"
            f"\t</Location>\n"
            f"\t<LocationMatch \"\\.(css|js|png)$\">\n"
            f"\t\tExpiresActive On\n"
            f"\t\tExpiresDefault \"access plus 1 day\"\n"
            f"\t</LocationMatch>\n"
            f"\tHeader always set Strict-Transport-Security \"max-age=31536000\"\n"
            f"\tRewriteEngine on\n"
            f"\tRewriteRule ^/old/(.*)$ /new/$1 [R=301,L]\n"
            f"\n"
            f"\tSSLEngine on\n"
            f"\tSSLCertificateFile {crt}\n"
            f"\tSSLCertificateKeyFile {key}\n"
            f"</VirtualHost>\n"
            f"</IfModule>\n")


def self_signed(d: str) -> Tuple[str, str]:
    crt, key = os.path.join(d, "sites.crt"), os.path.join(d, "sites.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=sites.example.test"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def build_tree(inst: ApacheInstance, n: int) -> None:
    if n <= 1:
        return
    crt, key = self_signed(str(inst.root))
    avail, enabled = inst.confdir / "sites-available", inst.confdir / "sites-enabled"
    for i in range(1, n):
        ssl = i % 10 != 0
        (avail / f"site{i:04d}.conf").write_text(site_conf(i, inst, crt, key, ssl))
        os.symlink(f"../sites-available/site{i:04d}.conf", str(enabled / f"site{i:04d}.conf"))


def _measure(inst: ApacheInstance, rounds: int) -> Dict[str, Any]:
    env = tool_env(inst)
    rus = os.path.join(str(inst.root), "rusage.json")
    gtime = os.path.join(str(inst.root), "gnu-time.txt")
    cmds = {
        "dump": ["/usr/bin/time", "-f", "%M", "-o", gtime, "/usr/sbin/apache2ctl", "-t", "-D", "DUMP_INCLUDES"],
        "status": [PYTHON, f"{REPO}/bench/rusage_run.py", rus, "status"],
        "diff": [PYTHON, f"{REPO}/bench/rusage_run.py", rus, "diff"],
    }
    t: Dict[str, List[float]] = {k: [] for k in cmds}
    cpu: Dict[str, List[float]] = {k: [] for k in cmds}
    rss: Dict[str, List[int]] = {k: [] for k in cmds}
    own: Dict[str, List[float]] = {"status": [], "diff": []}
    kids: Dict[str, List[float]] = {"status": [], "diff": []}
    log = os.path.join(str(inst.root), "measured.out")
    # one warm-up of each (page cache, byte-code cache)
    for k, argv in cmds.items():
        run_measured(argv, env, log)
    names = list(cmds)
    for i in range(rounds):
        for k in names[i % 3:] + names[:i % 3]:
            r = run_measured(cmds[k], env, log)
            if r["rc"] != 0:
                raise RuntimeError(f"{shown(cmds[k])}: exit {r['rc']}: {r.get('output', '')}")
            t[k].append(r["seconds"])
            cpu[k].append(r["cpu"])
            if k == "dump":
                with open(gtime) as f:
                    rss[k].append(int(f.read().split()[-1]))
            else:
                with open(rus) as f:
                    ru = json.load(f)
                rss[k].append(ru["self_maxrss_kib"])
                own[k].append(ru["self_cpu"])
                kids[k].append(ru["children_cpu"])
    return {"seconds": {k: summary(v) for k, v in t.items()}, "cpu": {k: summary(v) for k, v in cpu.items()},
            "own_cpu": {k: summary(v) for k, v in own.items()}, "children_cpu": {k: summary(v) for k, v in kids.items()},
            "maxrss_kib": {k: summary(v) for k, v in rss.items()}}


def core(args: List[str], env: Dict[str, str]) -> Dict[str, float]:
    """The tool's own work: CPU seconds (best of n) in a fresh process (bench/core_time.py)."""
    p = subprocess.run([PYTHON, f"{REPO}/bench/core_time.py"] + args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError("core_time.py: " + p.stderr.decode(errors="replace")[-1500:])
    return json.loads(p.stdout)


def growth(xs: List[float], ys: List[float]) -> Dict[str, Any]:
    """How y grows with x over three points.

    exponent: log((y3 - y1) / (y2 - y1)) / log((x3 - x1) / (x2 - x1)) -- the growth of the *marginal*
    cost (fixed start-up costs cancel): 1.0 linear, 2.0 quadratic. Also the least-squares line y = a + b x
    and its worst relative error at the three points.
    """
    out: Dict[str, Any] = {}
    d2, d3 = ys[1] - ys[0], ys[2] - ys[0]
    if d2 > 0 and d3 > 0:
        out["exponent"] = math.log(d3 / d2) / math.log((xs[2] - xs[0]) / (xs[1] - xs[0]))
    else:
        out["exponent"] = None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    out["fit_a"], out["fit_b"] = a, b
    out["fit_max_rel_err"] = max(abs(a + b * x - y) / y for x, y in zip(xs, ys) if y)
    out["ratios"] = [ys[1] / ys[0] if ys[0] else None, ys[2] / ys[1] if ys[1] else None]
    return out


def run(cfg: Dict[str, Any]) -> Dict[str, Any]:
    res: Dict[str, Any] = {"config": dict(cfg), "loadavg_before": loadavg(), "files": {}, "trees": {}}
    for lines in cfg["file_lines"]:
        root = new_root(f"scale-file{lines}")
        try:
            inst = ApacheInstance(root, "webkit-only")
            base = inst.vhost_bytes()
            inst.write_vhost(padded_vhost(base, lines))
            if not inst.configtest().ok:
                raise RuntimeError(f"{lines}-line vhost fails configtest: {inst.configtest().output[-1500:]}")
            m = _measure(inst, cfg["rounds"] if lines < 100000 else cfg["rounds_large"])
            m["bytes"] = len(inst.vhost_bytes())
            m["core_seconds"] = core(["file", str(inst.vhost_path), "9" if lines < 100000 else "3"], tool_env(inst))
            res["files"][str(lines)] = m
        finally:
            remove_root(root)
    for n in cfg["tree_vhosts"]:
        root = new_root(f"scale-tree{n}")
        try:
            inst = ApacheInstance(root, "webkit-only")
            build_tree(inst, n)
            r = inst.configtest()
            if not r.ok:
                raise RuntimeError(f"{n}-vhost tree fails configtest: {r.output[-1500:]}")
            m = _measure(inst, cfg["rounds"])
            m["core_seconds"] = core(["tree", "5"], tool_env(inst))
            m["files_enabled"] = len(os.listdir(str(inst.confdir / "sites-enabled")))
            m["ssl_vhosts"] = 1 + sum(1 for i in range(1, n) if i % 10 != 0)
            res["trees"][str(n)] = m
        finally:
            remove_root(root)
    for series, xs in (("files", cfg["file_lines"]), ("trees", cfg["tree_vhosts"])):
        g: Dict[str, Any] = {}

        def add(label: str, ys: List[float]) -> None:
            g[label] = growth(list(map(float, xs)), ys)

        for k in ("status", "diff"):
            add(f"{k}: tool's own CPU", [res[series][str(x)]["own_cpu"][k]["median"] for x in xs])
            add(f"{k}: peak RSS (tool)", [float(res[series][str(x)]["maxrss_kib"][k]["median"]) for x in xs])
            add(f"{k}: wall time", [res[series][str(x)]["seconds"][k]["median"] for x in xs])
        add("status: Apache's CPU (its children)", [res[series][str(x)]["children_cpu"]["status"]["median"] for x in xs])
        add("-t -D DUMP_INCLUDES: CPU", [res[series][str(x)]["cpu"]["dump"]["median"] for x in xs])
        add("-t -D DUMP_INCLUDES: peak RSS", [float(res[series][str(x)]["maxrss_kib"]["dump"]["median"]) for x in xs])
        for k in (("parse+assess", "parse+assess, gc off", "plan+diff") if series == "files" else ("locate", "plan+diff")):
            add(f"core {k} (in-process CPU)", [res[series][str(x)]["core_seconds"][k] for x in xs])
        res[series + "_growth"] = g
    res["commands"] = {
        "status": "python3 bench/rusage_run.py OUT.json status   (= python3 -m dataone_cn_sslverify status, plus VmHWM)",
        "diff": "python3 bench/rusage_run.py OUT.json diff",
        "dump": "/usr/bin/time -f %M apache2ctl -t -D DUMP_INCLUDES   (GNU time: Apache's peak RSS)",
        "core": "python3 bench/core_time.py file VHOST 9 (3 at 100k lines) | tree 5   (process CPU of the tool's own "
                "work, best of N: parse + assess or locate, and plan + unified diff)",
    }
    res["loadavg_after"] = loadavg()
    return res
