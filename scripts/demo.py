#!/usr/bin/python3
"""`make demo`: the whole job on a throwaway CN, end to end, with nothing to set up.

Builds a real Apache 2.4 instance under ``.demo/`` (Debian's APACHE_CONFDIR
convention; the host's /etc/apache2 is only read for module .load files),
with a throwaway CA and the realistic CN vhost of the test suite in its
historical `webkit-only` form, starts it on free 127.0.0.1 ports, then runs
the real command against it:

    status -> diff -> probe (before) -> apply -> probe (after) -> revert -> status

and stops the server. Every command is printed before it runs, as an
operator would type it on a CN (there the environment variables are not
needed: the defaults are /etc/apache2 and /var/lib/dataone-cn-sslverify).
"""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]  # the package, and the test harness

from harness.instance import ApacheInstance  # noqa: E402


def main() -> int:
    variant = os.environ.get("DEMO_VARIANT", "webkit-only")
    root = os.path.join(REPO, ".demo")
    if os.path.exists(root):
        shutil.rmtree(root)
    print(f"== building a throwaway CN Apache instance in {root} (vhost variant: {variant})", flush=True)
    with ApacheInstance(root, variant=variant) as inst:
        inst.start()
        env = inst.env()
        env["PYTHONPATH"] = REPO
        print(f"== Apache is serving https://{inst.server_name}:{inst.https_port}/ on 127.0.0.1", flush=True)
        print(f"   APACHE_CONFDIR={env['APACHE_CONFDIR']}\n   DATAONE_CN_SSLVERIFY_STATE_DIR={env['DATAONE_CN_SSLVERIFY_STATE_DIR']}")
        failed = []
        for args, expect in [
            (["status"], 0),
            (["diff"], 0),
            (["probe"], 0),
            (["apply"], 0),
            (["probe"], 0),
            (["revert"], 0),
            (["status"], 0),
        ]:
            print(f"\n$ dataone-cn-sslverify {' '.join(args)}", flush=True)
            p = subprocess.run([sys.executable, "-m", "dataone_cn_sslverify"] + args, env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            sys.stdout.write(p.stdout.decode("utf-8", "replace"))
            print(f"[exit {p.returncode}]", flush=True)
            if p.returncode != expect:
                failed.append(" ".join(args))
        same = inst.vhost_bytes() == inst.rendered_vhost()
        print(f"\n== after revert the vhost is {'byte-identical to' if same else 'DIFFERENT from'} the original")
    print("== Apache stopped; the instance stays in .demo/ for a look (make clean removes it)")
    if failed or not same:
        print(f"demo FAILED: {', '.join(failed) or 'vhost differs after revert'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
