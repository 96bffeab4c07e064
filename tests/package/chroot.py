"""Debian chroots for the package lifecycle tests (and `make piuparts`, `make demo-deb`).

What this gives the tests
-------------------------
* ``base_tree()``: a Debian 12 ``minbase`` tree with apache2, python3, curl,
  openssl and ca-certificates installed, built once with ``debootstrap`` and
  cached in ``CACHE_DIR`` (outside the repository), keyed by a hash of suite,
  mirror, package list and this file's recipe version: ``KEY.tar`` (the
  archive; ``piuparts_tgz()`` derives piuparts' base tarball from it) and
  ``KEY.tree/`` (the same tree unpacked once, never written to afterwards).
* ``Chroot``: a fresh, writable view of that tree per test: an **overlayfs**
  (lower: the cached tree, upper: a per-test directory) mounted inside the
  test's own **PID, mount and UTS namespaces** (``unshare``).  Creating one
  takes ~50 ms instead of unpacking 360 MB; every change lands in the
  per-test upper directory, so tests cannot leak into each other or into the
  cache.  Commands run inside through ``nsenter`` (``Chroot.run``/``sh``/
  ``apt``); the tests read and write the tree through ``/proc/PID/root``
  (``Chroot.path``), resolving symlinks inside the chroot, never on the host.

Why namespaces and not a bare ``chroot DIR cmd``
------------------------------------------------
* The overlay, ``/proc``, ``/dev/pts`` and ``/dev/shm`` are mounted inside a
  *private* mount namespace: the host never sees them and they disappear with
  the namespace.  Nothing to unmount at teardown, nothing leaked when a test
  fails or pytest is killed, and deleting the test's directory can never walk
  into a mount.
* PID 1 of the namespace is a tiny reaper (python3 in the chroot) that exits
  when its stdin, a pipe held by this process, closes: when the ``Chroot`` is
  closed, *or when pytest dies*, the kernel kills every process of the
  namespace (Apache included).  No stray server can outlive a test.  PID 1
  must reap orphans: a daemonised Apache is re-parented to it, and an unreaped
  zombie makes the init script's stop loop (``kill -0``) wait 60 s.
* The chroot's ``/proc`` shows only its own processes: Debian's init script
  (``pidof apache2``) cannot mistake a host Apache for the chroot's, and
  ``/proc/1/exe`` is not systemd, so ``apache2ctl`` and the package's own
  reload code take their non-systemd path, as in a container.

The network is the host's (the tests' clients connect to 127.0.0.1:PORT), so
``Chroot`` rewrites ``ports.conf`` to two free loopback ports before any
command runs inside, and the cached tree keeps a ``policy-rc.d`` that denies
every service action: the apache2 postinst run while building the tree never
starts a server on the host's port 80, and a chroot starts with services
denied until a test decides (``set_policy_rc(allow=True)``: maintainer
scripts may stop/start Apache, as on a CN; ``allow=False``: piuparts-like).
Without any policy-rc.d, invoke-rc.d in a chroot with no init system blocks
every action ("No init system and policy-rc.d missing! Defaulting to block").

Local apt repository
--------------------
``Chroot.publish(debs)`` makes a signed repository of the .debs with the
release's own tool (``scripts/make-apt-repo``: reprepro, ``InRelease`` signed
by a throwaway key of the test session, ``aptrepo.py``), copies it to
``/srv/localrepo`` inside the tree (a copy, not a bind mount) and points apt at
it with a deb822 ``file:`` source whose ``Signed-By:`` is that key's keyring:
apt checks the signature as on a CN (no ``trusted=yes``).  It is the *only* source
inside: tests run offline once the cache exists, and each test publishes
exactly the versions it wants apt to see (so ``apt-get upgrade`` upgrades
exactly what the test means).

Command line (used by ``scripts/make-chroot``, ``make piuparts``, ``make demo-deb``)::

    python3 tests/package/chroot.py base          # build if needed; print the cached tarball path
    python3 tests/package/chroot.py piuparts-tgz  # print a .tgz for piuparts --basetgz
"""

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO_ROOT not in sys.path:  # run as a script: import dataone_cn_sslverify from this tree
    sys.path.insert(0, _REPO_ROOT)
from dataone_cn_sslverify.records import dataclass

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import aptrepo  # noqa: E402  (the signed repository, scripts/make-apt-repo)
REPO_ROOT = HERE.parents[1]
STANDIN_DIR = HERE / "standin"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "vhosts"

#: Bumped whenever the recipe below changes the tree (invalidates the cache).
RECIPE_VERSION = 3
DEFAULT_SUITE = os.environ.get("DATAONE_CN_SSLVERIFY_CHROOT_SUITE", "bookworm")
MIRROR = os.environ.get("DATAONE_CN_SSLVERIFY_CHROOT_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("DATAONE_CN_SSLVERIFY_CHROOT_CACHE", "/var/tmp/dataone-cn-sslverify-chroot-cache"))
#: What a CN has before our package arrives (our Depends, and the tools the tests use inside).
PACKAGES = ("apache2", "python3", "curl", "openssl", "ca-certificates")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SERVER_NAME = "cn.dataone.test"
#: Where the chroot's apt finds the local repository's public key (``Signed-By:``).
KEYRING = "/etc/apt/keyrings/dataone-cn-sslverify-tests.gpg"
HOSTNAME = "cn-chroot"

POLICY_RC_DENY = "#!/bin/sh\n# dataone-cn-sslverify tests: deny every service action (like piuparts)\nexit 101\n"
POLICY_RC_ALLOW = "#!/bin/sh\n# dataone-cn-sslverify tests: allow service actions (no init system in this chroot)\nexit 0\n"

Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print("[chroot] " + msg, file=sys.stderr, flush=True)


class ChrootError(RuntimeError):
    pass


def _host_env() -> Dict[str, str]:
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root"}


def _check_host() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (debootstrap, namespaces, overlayfs)")
    for tool in ("/usr/sbin/debootstrap", "/usr/bin/unshare", "/usr/bin/nsenter", "/usr/bin/dpkg-scanpackages",
                 "/usr/bin/dpkg-deb", "/usr/bin/curl", "/usr/bin/reprepro", "/usr/bin/gpg"):
        if not os.access(tool, os.X_OK):
            problems.append(f"{tool} missing")
    if problems:
        raise ChrootError("lifecycle chroot cannot be built: " + "; ".join(problems)
                          + " (apt-get install debootstrap dpkg-dev curl util-linux reprepro gnupg)")


# ----------------------------------------------------------------------------- cache


def cache_key(suite: str = DEFAULT_SUITE, mirror: str = MIRROR, packages: Sequence[str] = PACKAGES) -> str:
    blob = json.dumps({"suite": suite, "mirror": mirror, "variant": "minbase", "packages": sorted(packages),
                       "recipe": RECIPE_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _cache_name(suite: str) -> str:
    return f"{suite}-minbase-{cache_key(suite)}"


class _CacheLock:
    """An exclusive flock on CACHE_DIR/.lock: one session builds, the others wait."""

    def __enter__(self) -> "_CacheLock":
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self.f = open(CACHE_DIR / ".lock", "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def base_tarball(suite: str = DEFAULT_SUITE, log: Log = _stderr_log, timings: Optional[Dict[str, float]] = None) -> Path:
    """The cached base tree for ``suite`` as a tar; built (debootstrap, once, under a lock) if missing."""
    _check_host()
    tar = CACHE_DIR / f"{_cache_name(suite)}.tar"
    if tar.exists():
        return tar
    with _CacheLock():
        if tar.exists():
            return tar
        t0 = time.monotonic()
        _build_base(tar, suite, log, timings)
        log(f"base tree {tar.name} built in {time.monotonic() - t0:.0f}s")
    return tar


def base_tree(suite: str = DEFAULT_SUITE, log: Log = _stderr_log, timings: Optional[Dict[str, float]] = None) -> Path:
    """The cached tarball unpacked once into ``KEY.tree/`` (the read-only lower layer of every Chroot)."""
    tar = base_tarball(suite, log, timings)
    tree = CACHE_DIR / f"{_cache_name(suite)}.tree"
    stamp = tree / ".dataone-complete"
    if stamp.exists():
        return tree
    with _CacheLock():
        if stamp.exists():
            return tree
        if tree.exists():
            _rmtree(tree)
        tmp = Path(str(tree) + ".tmp")
        if tmp.exists():
            _rmtree(tmp)
        tmp.mkdir()
        t0 = time.monotonic()
        subprocess.run(["tar", "--numeric-owner", "-C", str(tmp), "-xf", str(tar)], check=True)
        (tmp / ".dataone-complete").write_text(tar.name + "\n")
        os.replace(str(tmp), str(tree))
        if timings is not None:
            timings["unpack base tree"] = time.monotonic() - t0
    return tree


def _build_base(tar: Path, suite: str, log: Log, timings: Optional[Dict[str, float]]) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"build-{suite}-", dir=str(CACHE_DIR)))
    root = work / "root"
    try:
        t0 = time.monotonic()
        log(f"debootstrap --variant=minbase {suite} ({MIRROR}) ...")
        for attempt in (1, 2):
            p = subprocess.run(["debootstrap", "--variant=minbase", suite, str(root), MIRROR], env=_host_env(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if p.returncode == 0:
                break
            log(f"debootstrap failed (attempt {attempt}):\n{p.stdout.decode(errors='replace')[-3000:]}")
            shutil.rmtree(str(root), ignore_errors=True)
        else:
            raise ChrootError(f"debootstrap {suite} failed twice")
        t1 = time.monotonic()
        # Deny service starts *before* apache2 is installed: its postinst runs
        # invoke-rc.d apache2 start, which would bind the host's port 80.
        _write(root / "usr/sbin/policy-rc.d", POLICY_RC_DENY, 0o755)
        _write(root / "etc/apt/apt.conf.d/90dataone-tests",
               'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
               'Acquire::Languages "none";\nDpkg::Use-Pty "false";\n', 0o644)
        with Namespace(root) as ns:
            ns.check(["sh", "-c", "apt-get update -q && apt-get install -y -q " + " ".join(PACKAGES)
                      + " && apt-get clean"], timeout=1800)
        # Safe defaults in the cached tree: loopback only, on a port that
        # Chroot always replaces before anything runs inside.
        _write(root / "etc/apache2/ports.conf", _ports_conf(1, 1), 0o644)
        for f in (root / "var/lib/apt/lists").glob("*_*"):
            f.unlink()
        t2 = time.monotonic()
        tmp = tar.with_suffix(".tar.tmp")
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], check=True)
        os.replace(str(tmp), str(tar))
        if timings is not None:
            timings.update(debootstrap=t1 - t0, install=t2 - t1, tar=time.monotonic() - t2)
        log(f"debootstrap {t1 - t0:.0f}s, apt install {t2 - t1:.0f}s, tar {time.monotonic() - t2:.0f}s")
    finally:
        _rmtree(work)


def piuparts_tgz(suite: str = DEFAULT_SUITE, log: Log = _stderr_log) -> Path:
    """The cached tree as a gzip tar for ``piuparts --basetgz``: without our policy-rc.d
    (piuparts installs its own) and with Debian's own ports.conf."""
    tar = base_tarball(suite, log)
    tgz = tar.with_name(tar.name[:-4] + ".piuparts.tgz")
    if tgz.exists() and tgz.stat().st_mtime >= tar.stat().st_mtime:
        return tgz
    tmp = Path(str(tgz) + ".tmp")
    with tarfile.open(str(tar)) as src, gzip.open(str(tmp), "wb", compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as dst:
            for m in src:
                if m.name in ("./usr/sbin/policy-rc.d", "./etc/apt/apt.conf.d/90dataone-tests"):
                    continue
                if m.name == "./etc/apache2/ports.conf":
                    data = b"# If you just change the port or add more ports here, you will likely also\n" \
                           b"# have to change the VirtualHost statement in\n" \
                           b"# /etc/apache2/sites-enabled/000-default.conf\n\nListen 80\n\n" \
                           b"<IfModule ssl_module>\n\tListen 443\n</IfModule>\n\n" \
                           b"<IfModule mod_gnutls.c>\n\tListen 443\n</IfModule>\n"
                    m.size = len(data)
                    dst.addfile(m, io.BytesIO(data))
                    continue
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    os.replace(str(tmp), str(tgz))
    log(f"piuparts base {tgz}")
    return tgz


# ----------------------------------------------------------------------------- helpers


def _write(path: Path, text: Union[str, bytes], mode: int) -> None:
    """Atomic write on the host's view of a path (temp file + rename: hard links are never written through)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(path.name + ".tmp-dataone")
    tmp.write_bytes(data)
    os.chmod(str(tmp), mode)
    os.replace(str(tmp), str(path))


def _ports_conf(http: int, https: int) -> str:
    return ("# ports.conf -- rewritten by the dataone-cn-sslverify lifecycle tests: loopback only,\n"
            "# free ports, so Apache in this chroot never binds the host's 80/443.\n"
            f"Listen 127.0.0.1:{http}\n\n<IfModule ssl_module>\n\tListen 127.0.0.1:{https}\n</IfModule>\n")


def _mounted_under(path: Path) -> List[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if (line.split()[1] + "/").startswith(prefix)]


def _rmtree(path: Path) -> None:
    if not os.path.lexists(str(path)):
        return
    mounts = _mounted_under(path)
    if mounts:  # never reached with private namespaces; refuse rather than delete through a mount
        raise ChrootError(f"refusing to delete {path}: still mounted: {mounts}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def free_port() -> int:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Run:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\n(exit {self.returncode}, {self.seconds:.1f}s)\n{self.stdout}{self.stderr}"


#: PID 1 of a chroot's namespace: reap every child; exit (so the kernel kills
#: the namespace) when our end of the stdin pipe closes.  No single quotes.
_INIT_PY = """
import os, select
print("ready", flush=True)
while True:
    ready = select.select([0], [], [], 0.05)[0]
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    if ready and not os.read(0, 1):
        break
"""


class Namespace:
    """PID + mount + UTS namespaces whose PID 1 is chrooted at ``mountpoint``.

    With ``lower``/``upper``/``work`` the root is an overlayfs mounted at
    ``mountpoint`` inside the namespace; without, ``mountpoint`` is a plain tree
    (used while building the cache).  See the module docstring.
    """

    def __init__(self, mountpoint: Path, lower: Optional[Path] = None, upper: Optional[Path] = None,
                 work: Optional[Path] = None) -> None:
        self.mountpoint = mountpoint.resolve()
        self.lower, self.upper, self.work = lower, upper, work
        self.proc: Optional[subprocess.Popen] = None
        self.init_pid: Optional[int] = None

    def __enter__(self) -> "Namespace":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root_view(self) -> Path:
        """The chroot's ``/`` as the host can reach it (the overlay exists only inside the namespace)."""
        if self.init_pid is None:
            raise ChrootError("namespace not started")
        return Path(f"/proc/{self.init_pid}/root")

    def start(self) -> None:
        r = str(self.mountpoint)
        steps = [f"hostname {HOSTNAME}"]
        if self.lower is not None:
            steps.append(f"mount -t overlay overlay -o lowerdir='{self.lower}',upperdir='{self.upper}',"
                         f"workdir='{self.work}' '{r}'")
            have_python = (self.lower / "usr/bin/python3").exists()
        else:
            have_python = (self.mountpoint / "usr/bin/python3").exists()
        steps += [f"mount -t proc proc '{r}/proc'",
                  f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts '{r}/dev/pts'",
                  f"mount -t tmpfs -o mode=1777 tmpfs '{r}/dev/shm'"]
        init = "/usr/bin/python3 -c '" + _INIT_PY + "'" if have_python else "/bin/sh -c 'echo ready; read x; exit 0'"
        script = " && ".join(steps) + f" && exec chroot '{r}' {init}"
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--propagation", "private", "--kill-child",
             "sh", "-c", script],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_host_env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.close()
            raise ChrootError(f"namespace for {r} did not start: {line!r} {err}")
        # The namespace's PID 1 as the host sees it: unshare's child whose root is the mountpoint.
        deadline = time.monotonic() + 5
        while self.init_pid is None and time.monotonic() < deadline:
            for pid in _children_of(self.proc.pid):
                if _root_of(pid) == r:
                    self.init_pid = pid
            time.sleep(0.01)
        if self.init_pid is None:
            self.close()
            raise ChrootError(f"namespace for {r}: cannot find its init process")

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()  # PID 1 reads EOF and exits; the kernel kills the rest
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            if self.init_pid:
                try:
                    os.kill(self.init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        self.proc = None
        self.init_pid = None
        # A process still rooted here would be a leak (there can be none: PID namespace).
        left = [pid for pid in _all_pids() if _root_of(pid) == str(self.mountpoint)]
        if left:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise ChrootError(f"processes survived the namespace of {self.mountpoint}: {left}")

    def argv(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> List[str]:
        if self.init_pid is None:
            raise ChrootError("namespace not started")
        e = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb",
             "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
        e.update(env or {})
        return (["nsenter", "--target", str(self.init_pid), "--pid", "--mount", "--uts", "--root", "--wd",
                 "env", "-i"] + [f"{k}={v}" for k, v in e.items()] + list(argv))

    def run(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 600,
            input: Optional[bytes] = None, merge: bool = False) -> Run:
        """Run ``argv`` in the chroot.  ``merge``: stderr into stdout, in the order written (for apt runs,
        where the interleaving of dpkg's and the maintainer scripts' lines is the evidence)."""
        t0 = time.monotonic()
        stdin = {} if input is not None else {"stdin": subprocess.DEVNULL}  # 3.6: never input= with stdin=
        p = subprocess.run(self.argv(argv, env), input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT if merge else subprocess.PIPE, timeout=timeout, env=_host_env(),
                           **stdin)
        return Run(list(argv), p.returncode, p.stdout.decode("utf-8", "replace"),
                   (p.stderr or b"").decode("utf-8", "replace"), time.monotonic() - t0)

    def check(self, argv: Sequence[str], **kw: object) -> Run:
        r = self.run(argv, **kw)  # type: ignore[arg-type]
        if not r.ok:
            raise ChrootError(f"command failed in {self.mountpoint}:\n{r}")
        return r


def _all_pids() -> List[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _root_of(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return None


def _children_of(ppid: int) -> List[int]:
    out = []
    for pid in _all_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(pid)
        except (OSError, ValueError, IndexError):
            pass
    return out


# ----------------------------------------------------------------------------- the chroot


class Chroot:
    """A fresh overlay of the cached tree in its own namespaces, and helpers for the tests.

    ``http_port``/``https_port``: the loopback ports written to ``ports.conf``
    (and given to the stand-in's vhost).  Use as a context manager or call
    ``close()``; the per-test directory (``dir``: ``upper/`` holds every change)
    is deleted unless ``keep=True``.
    """

    def __init__(self, parent: Path, tree: Optional[Path] = None, suite: str = DEFAULT_SUITE,
                 log: Log = _stderr_log) -> None:
        self.log = log
        self.tree = tree or base_tree(suite, log)
        self.dir = Path(tempfile.mkdtemp(prefix="chroot-", dir=str(parent))).resolve()
        for sub in ("root", "upper", "work"):
            (self.dir / sub).mkdir()
        self.timings: Dict[str, float] = {}
        self.ns: Optional[Namespace] = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        t0 = time.monotonic()
        self.ns = Namespace(self.dir / "root", self.tree, self.dir / "upper", self.dir / "work")
        self.ns.start()
        self.timings["namespace"] = time.monotonic() - t0
        self.http_port, self.https_port = free_port(), free_port()
        while self.https_port == self.http_port:
            self.https_port = free_port()
        # Before any command runs inside: loopback-only ports, services denied until a test says otherwise.
        self.write("/etc/apache2/ports.conf", _ports_conf(self.http_port, self.https_port))
        self.set_policy_rc(allow=False)
        self.write("/etc/hosts", f"127.0.0.1\tlocalhost {HOSTNAME} {SERVER_NAME}\n::1\tlocalhost\n")
        self.write("/etc/hostname", HOSTNAME + "\n")
        self.write("/etc/apache2/conf-available/servername.conf",
                   "# lifecycle tests: no FQDN in the chroot (silences AH00558)\nServerName localhost\n")
        self.check(["a2enconf", "-q", "servername"])

    @property
    def root(self) -> Path:
        """The chroot's ``/`` as seen from the host (only while it is open)."""
        assert self.ns is not None, "chroot closed"
        return self.ns.root_view

    # -- lifecycle of the object
    def __enter__(self) -> "Chroot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, keep: bool = False) -> None:
        ns, self.ns = self.ns, None
        if ns is not None:
            ns.close()
        if keep:
            self.log(f"kept {self.dir}/upper (this chroot's changes over {self.tree})")
        else:
            _rmtree(self.dir)

    # -- files
    def path(self, inside: str, follow: bool = False) -> Path:
        """Host path of ``inside`` (absolute in the chroot), symlinks of its directories resolved *in
        the chroot* (an absolute link target never escapes to the host); the last component is
        followed only with ``follow=True``."""
        parts = [p for p in inside.split("/") if p not in ("", ".")]
        resolved: List[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, name)
            if (parts or follow) and os.path.islink(str(candidate)):
                hops += 1
                if hops > 40:
                    raise ChrootError(f"too many symlinks resolving {inside}")
                target = os.readlink(str(candidate))
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            resolved.append(name)
        return self.root.joinpath(*resolved)

    def read_bytes(self, inside: str) -> bytes:
        return self.path(inside, follow=True).read_bytes()

    def exists(self, inside: str) -> bool:
        return os.path.lexists(str(self.path(inside)))

    def write(self, inside: str, data: Union[str, bytes], mode: int = 0o644) -> None:
        _write(self.path(inside, follow=True), data, mode)

    # -- commands
    def run(self, argv: Sequence[str], **kw: object) -> Run:
        assert self.ns is not None, "chroot closed"
        return self.ns.run(argv, **kw)  # type: ignore[arg-type]

    def check(self, argv: Sequence[str], **kw: object) -> Run:
        assert self.ns is not None, "chroot closed"
        return self.ns.check(argv, **kw)  # type: ignore[arg-type]

    def sh(self, script: str, **kw: object) -> Run:
        return self.run(["sh", "-c", script], **kw)

    # -- services
    def set_policy_rc(self, allow: bool) -> None:
        """Allow (exit 0) or deny (exit 101) invoke-rc.d actions (see the module docstring)."""
        self.write("/usr/sbin/policy-rc.d", POLICY_RC_ALLOW if allow else POLICY_RC_DENY, 0o755)

    def apache_start(self) -> Run:
        r = self.check(["apache2ctl", "start"])
        self.wait_apache(True)
        return r

    def apache_stop(self) -> Run:
        r = self.run(["apache2ctl", "stop"])
        self.wait_apache(False)
        return r

    def apache_pid(self) -> Optional[int]:
        """Master PID (in the chroot's PID namespace), or None if Apache is not running."""
        r = self.run(["sh", "-c", "p=$(cat /run/apache2/apache2.pid 2>/dev/null) && kill -0 \"$p\" && echo $p"])
        return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else None

    def apache_processes(self) -> List[str]:
        """PIDs of every apache2 process in the chroot (master and children), sorted."""
        r = self.check(["sh", "-c", "for d in /proc/[0-9]*; do [ \"$(cat $d/comm 2>/dev/null)\" = apache2 ] "
                                    "&& echo ${d#/proc/}; done; true"])
        return sorted(r.stdout.split(), key=int)

    def wait_apache(self, running: bool, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.apache_pid()
            if (running and pid is not None and (_port_open(self.https_port) or _port_open(self.http_port))) \
                    or (not running and pid is None):
                return
            time.sleep(0.1)
        raise ChrootError(f"Apache {'did not start' if running else 'did not stop'} within {timeout}s:\n"
                          + self.error_log()[-3000:])

    def error_log(self) -> str:
        p = self.path("/var/log/apache2/error.log")
        return p.read_text(errors="replace") if p.exists() else ""

    # -- apt
    def codename(self) -> str:
        """The chroot's Debian codename (``VERSION_CODENAME`` of its os-release): the suite it asks apt for."""
        for line in self.read_bytes("/etc/os-release").decode().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
        raise ChrootError("no VERSION_CODENAME in the chroot's /etc/os-release")

    def publish(self, debs: Iterable[Path], signer: "Optional[aptrepo.Signer]" = None) -> None:
        """Make exactly ``debs`` the content of the local repository, signed, and ``apt-get update``."""
        # Made on the host (scripts/make-apt-repo, as `make release` does; signed with the session's
        # throwaway key unless ``signer`` is given), then copied in.
        stage = aptrepo.make_repo(self.dir / "localrepo", debs, signer or aptrepo.session_signer(),
                                  [self.codename()])
        r = self.use_repo(stage)
        shutil.rmtree(str(stage))
        if not r.ok:
            raise ChrootError(f"apt-get update refused the local repository:\n{r}")

    def use_repo(self, repo: Path, keyring: Optional[Path] = None) -> Run:
        """Copy the repository ``repo`` to ``/srv/localrepo`` and make it apt's only source, with its
        keyring (default: the one in ``repo``) as the only key apt accepts for it (``Signed-By:``,
        deb822); forget the lists of earlier runs, ``apt-get update``, and return that run: it fails
        when apt refuses the repository's signature or indexes."""
        keyring = keyring or repo / aptrepo.KEYRING_NAME
        inside = self.path("/srv/localrepo")
        if inside.exists():
            shutil.rmtree(str(inside))
        shutil.copytree(str(repo), str(inside))
        self.write(KEYRING, keyring.read_bytes(), 0o644)
        self.write("/etc/apt/sources.list", "# lifecycle tests: only the local repository (see sources.list.d)\n")
        self.write("/etc/apt/sources.list.d/localrepo.sources",
                   f"Types: deb\nURIs: file:/srv/localrepo\nSuites: {self.codename()}\nComponents: main\n"
                   f"Signed-By: {KEYRING}\n")
        self.check(["sh", "-c", "rm -rf /etc/apt/sources.list.d/localrepo.list /var/lib/apt/lists/*_localrepo_*"])
        return self.run(["apt-get", "update", "-q"], merge=True)

    def apt(self, *args: str, confold: bool = True) -> Run:
        """``apt-get -y ARGS`` (non-interactive; ``--force-confold`` keeps an operator's conffile edits)."""
        opts = ["-o", "Dpkg::Options::=--force-confold"] if confold else []
        return self.run(["apt-get", "-y", "-q"] + opts + list(args), timeout=900, merge=True)

    def dpkg_status(self, package: str) -> str:
        r = self.run(["dpkg-query", "-W", "-f=${Status} ${Version}", package])
        return r.stdout.strip() if r.ok else "not-installed"

    def dpkg_log(self) -> str:
        p = self.path("/var/log/dpkg.log")
        return p.read_text() if p.exists() else ""


# ----------------------------------------------------------------------------- a real client


#: User-Agents of the incident: IE11 on Windows 7 (not WebKit: asked by the original block), an API client.
IE11_UA = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"
CURL_UA = "curl/7.88.1"


@dataclass
class Live:
    """What one request with the host's curl saw: HTTP status, and whether the server sent a
    CertificateRequest during the initial handshake or after it (TLS 1.2 renegotiation / TLS 1.3 PHA)."""

    ua: str
    status: int
    asked_initial: bool
    asked_post: bool
    log: str

    @property
    def asked(self) -> bool:
        return self.asked_initial or self.asked_post

    def __str__(self) -> str:
        return (f"Live(ua={self.ua!r}, status={self.status}, asked_initial={self.asked_initial}, "
                f"asked_post={self.asked_post})\n{self.log[-2500:]}")


def live(ch: "Chroot", ua: str, path: str = "/cn/", tls: str = "1.2") -> Live:
    """One GET to the chroot's Apache with the host's curl (``-v`` traces every TLS handshake message),
    SNI and Host ``SERVER_NAME``, the server verified against the chroot's test CA."""
    args = ["curl", "-sS", "-v", "--http1.1", "--max-time", "20", f"--tlsv{tls}", "--tls-max", tls,
            "--resolve", f"{SERVER_NAME}:{ch.https_port}:127.0.0.1",
            "--cacert", str(ch.path("/etc/ssl/dataone/ca.crt", follow=True)), "-A", ua, "-o", "/dev/null",
            "-w", "%{http_code}", f"https://{SERVER_NAME}:{ch.https_port}{path}"]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40,
                       env={"PATH": SYSTEM_PATH, "LANG": "C"})
    log = p.stderr.decode("utf-8", "replace")
    m = re.search(r"SSL connection using TLSv", log)
    connected = m.start() if m else len(log)
    reqs = [x.start() for x in re.finditer(r"TLS handshake, (?:Request CERT|CERT request) \(13\)", log)]
    out = p.stdout.decode().strip()
    return Live(ua, int(out) if out.isdigit() else 0, any(r < connected for r in reqs),
                any(r > connected for r in reqs), log)


# ----------------------------------------------------------------------------- the stand-in package


def build_standin(version: str, out_dir: Path, template_note: Optional[str] = None,
                  variant: str = "webkit-only") -> Path:
    """Build the stand-in ``dataone-cn-os-core`` .deb (dpkg-deb) from ``tests/package/standin``.

    Its vhost template is the realistic fixture ``cn-ssl.VARIANT.conf``
    (default webkit-only: production before the change; ``browser-list``: a
    future release that carries the target block inline); ``template_note``
    adds a comment line to the template, i.e. a new upstream template.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="standin-", dir=str(out_dir)))
    try:
        tree = work / "tree"
        shutil.copytree(str(STANDIN_DIR / "root"), str(tree), symlinks=True)
        (tree / "DEBIAN").mkdir()
        control = (STANDIN_DIR / "control.in").read_text().replace("@VERSION@", version)
        (tree / "DEBIAN" / "control").write_text(control)
        for name in ("postinst", "postrm"):
            shutil.copyfile(str(STANDIN_DIR / name), str(tree / "DEBIAN" / name))
            os.chmod(str(tree / "DEBIAN" / name), 0o755)
        conffiles = sorted("/" + str(p.relative_to(tree)) for p in (tree / "etc").rglob("*") if p.is_file())
        (tree / "DEBIAN" / "conffiles").write_text("".join(c + "\n" for c in conffiles))
        template = (FIXTURES_DIR / f"cn-ssl.{variant}.conf").read_bytes()
        if template_note:
            marker = b"# On upgrade a locally modified copy is saved as cn-ssl.conf.YYYYmmddHHMMSS.\n"
            assert marker in template, "fixture header changed; update build_standin"
            template = template.replace(marker, marker + b"# " + template_note.encode() + b"\n")
        tdir = tree / "usr/share/dataone-cn-os-core/debian"
        tdir.mkdir(parents=True)
        (tdir / "cn-ssl.conf").write_bytes(template)
        for dirpath, dirnames, filenames in os.walk(str(tree)):
            os.chmod(dirpath, 0o755)
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                if not os.path.islink(p):
                    os.chmod(p, 0o755 if os.path.basename(dirpath) == "DEBIAN" and fn in ("postinst", "postrm")
                             else 0o644)
        deb = out_dir / f"dataone-cn-os-core_{version}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)], check=True,
                       stdout=subprocess.DEVNULL, env=_host_env())
        return deb
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


def prepare_cn(ch: "Chroot") -> None:
    """What a CN has before dataone-cn-os-core is installed: certificates where the vhost template
    expects them (a throwaway CA and server certificate, ``/etc/ssl/dataone``) and the settings the
    stand-in's postinst reads (``/etc/default/dataone-cn-os-core``)."""
    if str(REPO_ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
    from harness.pki import make_pki

    make_pki(ch.path("/etc/ssl/dataone", follow=True), SERVER_NAME)
    ch.write("/etc/default/dataone-cn-os-core", standin_settings(ch))


def standin_settings(ch: Chroot) -> str:
    """``/etc/default/dataone-cn-os-core``: the answers the real package gets from debconf."""
    return (f"# dataone-cn-os-core stand-in settings (lifecycle tests)\n"
            f"SERVER_NAME={SERVER_NAME}\nHTTPS_PORT={ch.https_port}\nHTTP_PORT={ch.http_port}\n"
            f"CERT_DIR=/etc/ssl/dataone\nDOCROOT=/var/www/dataone\nAPACHE_CONFDIR=/etc/apache2\n"
            f"LOG_DIR=/var/log/apache2\n")


# ----------------------------------------------------------------------------- repacking our .deb


def repack(deb: Path, out_dir: Path, version: str, edit: Optional[Callable[[Path], None]] = None) -> Path:
    """A copy of ``deb`` with another ``Version`` (and optional edits of the tree), md5sums refreshed.

    This is how the tests get an "upgrade" of our package without a second
    full build: the payload, scripts and triggers are the real ones.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="repack-", dir=str(out_dir)))
    try:
        tree = work / "tree"
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, env=_host_env())
        control = tree / "DEBIAN" / "control"
        text, n = re.subn(r"(?m)^Version: .*$", f"Version: {version}", control.read_text())
        assert n == 1
        control.write_text(text)
        if edit is not None:
            edit(tree)
        md5sums = tree / "DEBIAN" / "md5sums"
        if md5sums.exists():  # same set of paths as the build listed (dh_md5sums leaves conffiles out)
            listed = [line.split("  ", 1)[1] for line in md5sums.read_text().splitlines() if "  " in line]
            md5sums.write_text("".join(f"{hashlib.md5((tree / rel).read_bytes()).hexdigest()}  {rel}\n"
                                       for rel in listed if (tree / rel).is_file()))
        name = Path(deb).name.split("_")[0]
        out = out_dir / f"{name}_{version}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(out)], check=True,
                       stdout=subprocess.DEVNULL, env=_host_env())
        return out
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, stdout=subprocess.PIPE,
                          env=_host_env()).stdout.decode().strip()


# ----------------------------------------------------------------------------- CLI


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["base", "piuparts-tgz", "key"])
    p.add_argument("--suite", default=DEFAULT_SUITE)
    a = p.parse_args(argv)
    if a.what == "key":
        print(cache_key(a.suite))
    elif a.what == "base":
        print(base_tarball(a.suite))
    else:
        print(piuparts_tgz(a.suite))
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------- Ansible (fleet tests)

#: ``ansible_chroot_exe`` for community.general's ``chroot`` connection: the plugin runs
#: ``EXE DIR SHELL -c CMD`` (also for put_file/fetch_file); DIR is a Chroot's host view
#: ``/proc/PID/root``, and this enters PID's namespaces (PID, mount, UTS, root) the way
#: ``Namespace.argv`` does, so whatever Ansible runs (apt, the maintainer scripts, Apache's
#: reload) lives in that chroot's namespace and dies with it.  A bare ``chroot /proc/PID/root``
#: would run in the host's PID namespace: the chroot's pidfile PIDs would name host processes.
CHROOT_EXE_SH = """#!/bin/sh
# dataone-cn-sslverify fleet tests: ansible_chroot_exe that enters a Chroot's namespaces (chroot.py)
set -e
dir=$1; shift
pid=${dir#/proc/}; pid=${pid%/root}
case "$pid" in ''|*[!0-9]*) echo "chroot-exe: not /proc/PID/root: $dir" >&2; exit 125;; esac
exec nsenter --target "$pid" --pid --mount --uts --root --wd env -i PATH=@PATH@ LANG=C.UTF-8 HOME=/root \\
    TERM=dumb DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"
""".replace("@PATH@", SYSTEM_PATH)


def write_chroot_exe(path: Path) -> Path:
    """Write the ``ansible_chroot_exe`` wrapper (``CHROOT_EXE_SH``) to ``path``; returns it."""
    _write(path, CHROOT_EXE_SH, 0o755)
    return path


def ansible_inventory(hosts: "Dict[str, Chroot]", chroot_exe: Path, group: str = "cn") -> str:
    """An INI inventory: one host per Chroot, in the given order, reached through the chroot connection."""
    lines = [f"[{group}]"]
    for name, ch in hosts.items():
        lines.append(f"{name} ansible_host={ch.root} https_port={ch.https_port}")
    lines += ["", f"[{group}:vars]", "ansible_connection=community.general.chroot",
              f"ansible_chroot_exe={chroot_exe}", "ansible_python_interpreter=/usr/bin/python3", ""]
    return "\n".join(lines)
