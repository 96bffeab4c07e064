#!/usr/bin/python3
"""`make demo-deb`: the .deb at work on a throwaway Debian 12 "CN", with nothing to set up.

In a fresh copy of the cached debootstrap chroot (tests/package/chroot.py;
built on first use, ~1 min), with Apache listening on free 127.0.0.1 ports:

1. a stand-in ``dataone-cn-os-core`` (tests/package/standin) is installed with
   apt: it writes the CN vhost (the historical webkit-only block) and starts
   Apache; IE11 is asked for a certificate on /cn/ (the incident);
2. ``apt install dataone-cn-sslverify`` from a local repository: its postinst
   applies the policy (backup, patch, configtest, graceful reload, live check);
3. ``dataone-cn-sslverify status`` and ``probe`` inside the chroot, and the
   host's curl as an independent client: IE11 no longer asked, an API client
   still asked;
4. ``apt remove dataone-cn-sslverify``: the vhost is byte-identical to what it
   was before the install and IE11 is asked again.

Usage: demo-deb.py PATH.deb    (the Makefile passes dist/dataone-cn-sslverify_VERSION_all.deb)
"""

import hashlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "package")]  # the package, and the chroot helpers

import chroot as C  # noqa: E402

VHOST = "/etc/apache2/sites-available/cn-ssl.conf"


def show(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(ch: C.Chroot, argv: list, expect: int = 0) -> C.Run:
    print(f"\n(chroot)# {' '.join(argv)}", flush=True)
    r = ch.run(argv, merge=True)
    out = "\n".join(line for line in r.stdout.splitlines()
                    if "could not determine current runlevel" not in line and not line.startswith("Enabling "))
    print(out, flush=True)
    print(f"[exit {r.returncode}]", flush=True)
    if r.returncode != expect:
        raise SystemExit(f"demo-deb: `{' '.join(argv)}` exited {r.returncode}, expected {expect}")
    return r


def clients(ch: C.Chroot) -> str:
    ie, api = C.live(ch, C.IE11_UA), C.live(ch, C.CURL_UA)
    line = (f"host curl, TLS 1.2, GET /cn/:  IE11 -> {ie.status}, certificate requested: {'YES' if ie.asked else 'no'}"
            f"  |  API client (curl) -> {api.status}, certificate requested: {'YES' if api.asked else 'no'}")
    print(line, flush=True)
    return f"{ie.asked}/{api.asked}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def main(argv: list) -> int:
    if len(argv) != 2 or not argv[1].endswith(".deb") or not os.path.isfile(argv[1]):
        print(__doc__.split("Usage: ")[1].strip(), file=sys.stderr)
        return 2
    deb = Path(argv[1]).resolve()
    version = C.deb_field(deb, "Version")
    show(f"package {deb.name} (version {version})")
    tree = C.base_tree()
    with tempfile.TemporaryDirectory(prefix="demo-deb-", dir="/var/tmp") as tmp:
        standin = C.build_standin("1.0", Path(tmp) / "debs")
        with C.Chroot(Path(tmp), tree) as ch:
            show(f"throwaway Debian chroot (overlay of {tree.name}); Apache will listen on "
                 f"127.0.0.1:{ch.https_port} (https) and :{ch.http_port}")
            C.prepare_cn(ch)
            ch.set_policy_rc(allow=True)
            ch.publish([deb, standin])
            show("the CN as it is today: dataone-cn-os-core (test stand-in) writes the vhost and starts Apache")
            run(ch, ["apt-get", "install", "-y", "-q", "dataone-cn-os-core"])
            before = ch.read_bytes(VHOST)
            print(f"{VHOST}: sha256 {sha(before)}")
            before_clients = clients(ch)

            show("install the package")
            run(ch, ["apt-get", "install", "-y", "-q", "dataone-cn-sslverify"])
            run(ch, ["dataone-cn-sslverify", "status"])
            run(ch, ["dataone-cn-sslverify", "probe"])
            applied_clients = clients(ch)

            show("remove the package (prerm reverts)")
            run(ch, ["apt-get", "remove", "-y", "-q", "dataone-cn-sslverify"])
            after = ch.read_bytes(VHOST)
            same = after == before
            print(f"{VHOST}: sha256 {sha(after)}: {'byte-identical to' if same else 'DIFFERENT from'} "
                  "the vhost before the install")
            removed_clients = clients(ch)

    ok = same and before_clients == "True/True" and applied_clients == "False/True" and removed_clients == "True/True"
    show("demo-deb: " + ("OK: installed, applied live, removed, original restored" if ok else "FAILED (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
