#!/usr/bin/python3
"""CPU time of the tool's own work, in a fresh process, without Python's start-up or Apache's share.

    core_time.py file PATH REPEAT   apacheconf.parse + policy.assess of PATH (also with the cyclic GC
                                    off), and policy.plan_apply + policy.patch_diff (what `diff` computes)
    core_time.py tree REPEAT        (with an instance's environment) locate.locate(): Apache's list of
                                    loaded files (the apache2ctl child's CPU is not counted), then
                                    read + parse + assess every one of them; and choose + plan + diff

Prints JSON {"parse+assess" | "locate": s, "plan+diff": s}: the fastest of REPEAT runs, measured with
time.process_time() (this process only).
"""

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataone_cn_sslverify import apacheconf as ac, locate, paths, policy  # noqa: E402


def best_of(repeat, fn):
    best = {}
    for _ in range(repeat):
        gc.collect()
        for k, v in fn().items():
            best[k] = min(best.get(k, float("inf")), v)
    return best


def one_file(path):
    with open(path, "rb") as f:
        data = f.read()

    def run():
        t0 = time.process_time()
        tree = ac.parse(data, path)
        a = [x for x in policy.assess(tree, path) if x.state != "absent"][0]
        t1 = time.process_time()
        text = ac.decode(data)
        patch = policy.plan_apply(text, a)
        policy.patch_diff(path, text, patch)
        t2 = time.process_time()
        del tree, a
        gc.collect()
        gc.disable()  # the same parse without the cyclic GC: shows what the GC adds on big trees
        try:
            t3 = time.process_time()
            tree = ac.parse(data, path)
            policy.assess(tree, path)
            t4 = time.process_time()
        finally:
            gc.enable()
        return {"parse+assess": t1 - t0, "plan+diff": t2 - t1, "parse+assess, gc off": t4 - t3}
    return run


def one_tree():
    def run():
        t0 = time.process_time()
        loc = locate.locate(None, paths.policy_path())
        t1 = time.process_time()
        a = locate.choose(loc)
        text = ac.decode(loc.file_of(a).data)
        patch = policy.plan_apply(text, a, paths.policy_path())
        policy.patch_diff(a.filename, text, patch)
        return {"locate": t1 - t0, "plan+diff": time.process_time() - t1}
    return run


if sys.argv[1] == "file":
    out = best_of(int(sys.argv[3]), one_file(sys.argv[2]))
else:
    out = best_of(int(sys.argv[2]), one_tree())
json.dump(out, sys.stdout)
