#!/usr/bin/python3
"""`make bench`: run every benchmark, write bench/results.json and rewrite bench/RESULTS.md.

    python3 bench/run.py [--quick] [--only downtime,overhead,scale] [--report-only]

Each part builds its own throwaway Apache instances (tests/harness) under the
system temp dir, on 127.0.0.1, and removes them. Nothing under /etc/apache2
or /var/lib is touched. Every loop is bounded in count; the load generators
are also bounded in time and stop by themselves.
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

FULL = {
    "downtime": {"workers": 2, "interval": 0.01, "rounds": 10, "pause": 1.0, "warmup": 2.0, "control": 10.0,
                 "load_cap": 600.0, "max_requests": 400000, "observe": 5},
    "overhead": {"rounds": 20, "quick_rounds": 30, "breakdown_rounds": 5},
    "scale": {"file_lines": [1000, 10000, 100000], "tree_vhosts": [1, 100, 1000], "rounds": 9, "rounds_large": 5},
    "monitor": {"rounds": 30},
}
QUICK = {
    "downtime": dict(FULL["downtime"], rounds=2, control=3.0, load_cap=120.0),
    "overhead": {"rounds": 3, "quick_rounds": 5, "breakdown_rounds": 1},
    "scale": dict(FULL["scale"], rounds=2, rounds_large=1),
    "monitor": {"rounds": 3},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few rounds: a smoke test of the benchmarks themselves")
    p.add_argument("--only", default="downtime,overhead,scale,monitor")
    p.add_argument("--report-only", action="store_true", help="re-render RESULTS.md from results.json")
    a = p.parse_args()
    results_path = os.path.join(common.BENCH, "results.json")
    if os.geteuid() != 0:
        print("bench: must run as root (Apache switches its children to www-data)", file=sys.stderr)
        return 2
    if a.report_only:
        with open(results_path) as f:
            doc = json.load(f)
    else:
        cfgs = QUICK if a.quick else FULL
        parts = [x.strip() for x in a.only.split(",") if x.strip()]
        doc = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "quick": a.quick,
               "machine": common.machine(), "parts": {}}
        if set(parts) != set(FULL) and not a.quick and os.path.exists(results_path):
            with open(results_path) as f:  # a partial rerun keeps the other parts' figures
                old = json.load(f)
            if not old.get("quick"):
                doc["parts"] = old.get("parts", {})
        for part in parts:
            print(f"bench: {part} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            mod = __import__(part)
            doc["parts"][part] = mod.run(cfgs[part])
            doc["parts"][part]["wall_seconds"] = time.monotonic() - t0
            doc["parts"][part]["started"] = datetime.datetime.now().isoformat(timespec="seconds")
            print(f"bench: {part} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        doc["wall_seconds"] = sum(p.get("wall_seconds", 0.0) for p in doc["parts"].values())
        common.dump(results_path, doc)
    import report
    md = report.render(doc)
    out = os.path.join(common.BENCH, "RESULTS.md")
    with open(out + ".tmp", "w") as f:
        f.write(md)
    os.replace(out + ".tmp", out)
    print(f"bench: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
