#!/usr/bin/python3
"""`make demo-repo`: a throwaway Debian "CN" installs the package from the released repository.

``dist/apt/`` (``make release``) is served over HTTP on 127.0.0.1 (a stand-in
for the web server it is published on) and a fresh copy of the cached
debootstrap chroot (tests/package/chroot.py) does what README "Installing on a
CN from the repository" says, with the real commands: fetch the keyring into
/etc/apt/keyrings, write the deb822 source with ``Signed-By:``, ``apt-get
update``, ``apt-get install``. The chroot has no other apt source.

Usage: demo-apt-repo.py [DIST_APT_DIR [SUITE]]   (default: dist/apt bookworm)
"""

import functools
import http.server
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "package")]  # the package, and the chroot helpers

import chroot as C  # noqa: E402

KEYRING = "dataone-cn-sslverify-archive-keyring.gpg"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def run(ch: C.Chroot, script: str) -> None:
    print(f"\n(cn)# {script}", flush=True)
    r = ch.run(["sh", "-c", script], merge=True)
    print(r.stdout.rstrip("\n"), flush=True)
    if not r.ok:
        raise SystemExit(f"demo-apt-repo: exit {r.returncode}")


def main(argv: list) -> int:
    apt_dir = Path(argv[1] if len(argv) > 1 else REPO / "dist" / "apt").resolve()
    suite = argv[2] if len(argv) > 2 else "bookworm"
    if not (apt_dir / KEYRING).is_file() or not (apt_dir / "dists" / suite / "InRelease").is_file():
        print(f"demo-apt-repo: no released repository with suite {suite} in {apt_dir}: run `make release`",
              file=sys.stderr)
        return 2
    # A dev tool run by Debian's python3 (make), never on a CN: ThreadingHTTPServer/directory= (3.7) are fine.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(apt_dir)))  # novermin
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory(prefix="demo-apt-repo-", dir="/var/tmp") as tmp:
            with C.Chroot(Path(tmp), C.base_tree(suite)) as ch:
                ch.write("/etc/apt/sources.list", "")
                print(f"# {apt_dir} served at {url}; a fresh Debian {suite} chroot with no other apt source")
                run(ch, f"install -d -m 0755 /etc/apt/keyrings && curl -fsS -o /etc/apt/keyrings/{KEYRING} {url}/{KEYRING}")
                run(ch, f"cat > /etc/apt/sources.list.d/dataone-cn-sslverify.sources <<'EOF'\n"
                        f"Types: deb\nURIs: {url}\nSuites: {suite}\nComponents: main\n"
                        f"Signed-By: /etc/apt/keyrings/{KEYRING}\nEOF")
                run(ch, "apt-get update")
                run(ch, "apt-get install -y dataone-cn-sslverify")
                run(ch, "apt-cache policy dataone-cn-sslverify")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
