"""Apache as a process: config test, what it loads, is it running, graceful reload.

A thin edge over Debian's ``apache2ctl``, which honours ``APACHE_CONFDIR`` and
``APACHE_ENVVARS`` (Debian's multi-instance convention), so the same code
drives ``/etc/apache2`` on a CN and a throwaway instance in a test.

``apache2ctl`` is looked up on ``PATH`` with the system directories
*appended*: an operator's or a test's wrapper placed first on ``PATH`` wins.
Rules that keep a production server up:

* never start a stopped server (a reload of a stopped Apache is a no-op here);
* reload gracefully (children finish their requests), through systemd when
  it is PID 1 and manages this instance, else ``apache2ctl graceful``;
* after a reload, wait until a child of the *new* generation exists.
"""

import os
import re
import time
from typing import Dict, List, Optional, Set, Tuple

from . import apachecmd, prefetch, proc
from .records import dataclass

SYSTEM_PATH = apachecmd.SYSTEM_PATH
DEFAULT_CONFDIR = "/etc/apache2"


def environment() -> Dict[str, str]:
    """os.environ with the system dirs appended to PATH and LC_ALL=C for parseable output (`apachecmd`)."""
    return apachecmd.environment()


def confdir() -> str:
    return os.environ.get("APACHE_CONFDIR") or DEFAULT_CONFDIR


def envvars_path() -> str:
    return os.environ.get("APACHE_ENVVARS") or os.path.join(confdir(), "envvars")


def apache2ctl() -> str:
    """Path of the apache2ctl that will run (first on PATH, then the system dirs: `apachecmd`)."""
    found = apachecmd.apache2ctl()
    if not found:
        raise FileNotFoundError("apache2ctl not found (is the apache2 package installed?)")
    return found


@dataclass
class Result:
    ok: bool
    output: str
    argv: List[str]

    @property
    def first_error(self) -> str:
        """The line of the output that says what is wrong (Apache's 'AH00526: Syntax error ...').

        An ``AHnnnnn:`` line that names a file and line wins (with the line
        after it, which says what); lines that merely contain the word
        "error" (``DUMP_INCLUDES`` lists ``localized-error-pages.conf``) do not.
        """
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        for i, ln in enumerate(lines):
            if _AH_CODE.match(ln) and "Could not reliably determine" not in ln:
                if ln.endswith(":") and i + 1 < len(lines):
                    return f"{ln} {lines[i + 1]}"
                return ln
        for i, ln in enumerate(lines):
            if _INCLUDE_LINE.match(ln) or ln.startswith("Included configuration files"):
                continue
            if "error" in ln.lower() or ln.startswith("AH"):
                if "Could not reliably determine" not in ln:
                    # "AH00526: Syntax error on line N of FILE:" says where; the next line says
                    # what ("Invalid command 'X'..."). Without it the operator saw no reason.
                    if ln.endswith(":") and i + 1 < len(lines):
                        return f"{ln} {lines[i + 1]}"
                    return ln
        return lines[-1] if lines else ""


_AH_CODE = re.compile(r"^(?:\[[^]]*\]\s*)*AH[0-9]{5}:")


def run(args: List[str], timeout: float = 120.0) -> Result:
    return _result(proc.run([apache2ctl()] + args, env=environment(), merge_stderr=True, timeout=timeout))


def _result(r: proc.Ran) -> Result:
    return Result(r.ok, r.error or r.stdout, r.argv)


def configtest() -> Result:
    """``apache2ctl configtest``: the whole configuration as Apache would load it."""
    return run(["configtest"])


_INCLUDE_LINE = re.compile(r"^\s*\((?:\*|\d+)\)\s+(\S.*?)\s*$")


def dump_includes() -> Result:
    """``apache2ctl -t -D DUMP_INCLUDES``: the files Apache loads, and a config test (exit 0 only on "Syntax OK").

    The first call of a run may take the dump the entry point started before
    the imports (`prefetch`: only if it is still the dump that would run now).
    """
    argv, env = [apache2ctl()] + list(apachecmd.DUMP_ARGS), environment()
    got = prefetch.take(argv, env)
    if got is not None:
        status, output = got
        return Result(status == 0, output.decode("utf-8", "replace"), argv)
    return _result(proc.run(argv, env=env, merge_stderr=True, timeout=apachecmd.TIMEOUT))


def parse_dump_includes(output: str) -> List[str]:
    """File paths listed by ``-D DUMP_INCLUDES``, in load order."""
    return [m.group(1) for m in map(_INCLUDE_LINE.match, output.splitlines()) if m]


_ENVVAR_CACHE: Dict[Tuple[str, str], Optional[str]] = {}


def _envvar(name: str) -> Optional[str]:
    """A variable as Debian's envvars file sets it (the file is shell); read once per process."""
    key = (envvars_path(), name)
    if key not in _ENVVAR_CACHE:
        _ENVVAR_CACHE[key] = _read_envvar(name)
    return _ENVVAR_CACHE[key]


def _read_envvar(name: str) -> Optional[str]:
    path = envvars_path()
    if not os.path.exists(path):
        return None
    env = environment()
    env.setdefault("APACHE_CONFDIR", confdir())
    r = proc.run(["sh", "-c", '. "$1" >/dev/null 2>&1; eval "printf %s \\"\\${$2}\\""', "sh", path, name],
                 env=env, timeout=30)
    return r.stdout.strip() or None


def pid_file() -> str:
    return _envvar("APACHE_PID_FILE") or "/var/run/apache2/apache2.pid"


def master_pid() -> Optional[int]:
    """PID of the running Apache parent, or None if it is not running."""
    try:
        with open(pid_file()) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("Z"):
                return None
    except OSError:
        return None
    return pid


def is_running() -> bool:
    return master_pid() is not None


def _systemd_unit() -> Optional[str]:
    """The systemd unit for this instance when systemd is PID 1 and manages it, else None."""
    try:
        with open("/proc/1/comm") as f:
            if f.read().strip() != "systemd":
                return None
    except OSError:
        return None
    cd = os.path.realpath(confdir())
    if cd == DEFAULT_CONFDIR:
        return "apache2.service"
    base = os.path.basename(cd)
    if cd == os.path.join("/etc", base) and base.startswith("apache2-"):
        return f"apache2@{base[len('apache2-'):]}.service"
    return None


def _unit_active(unit: str) -> bool:
    return proc.run(["systemctl", "is-active", "--quiet", unit], env=environment(), capture=False, timeout=30).ok


def _children(pid: int) -> Dict[int, int]:
    """Child pid -> start time (clock ticks since boot).

    The kernel's list of the master's children (``/proc/PID/task/PID/children``:
    Apache's MPM forks them from its main thread) when it names any, else a
    scan of ``/proc``: the list is one small read, the scan reads every
    process's ``stat`` (hundreds on a CN), and the reload's wait polls this
    every few milliseconds.
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            listed = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        listed = []
    out = {}
    for entry in listed or (int(e) for e in os.listdir("/proc") if e.isdigit()):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields[0] is state; ppid is the 4th field of stat
            out[entry] = int(fields[19])
    return out


@dataclass
class Reload:
    ok: bool
    how: str  # "graceful" | "systemd" | "invoke-rc.d" | "skipped" (not running) | "denied" (policy-rc.d)
    detail: str
    tested_by: str = ""  # what config-tested the configuration before the signal ("" when nothing was signalled)

    @property
    def done(self) -> bool:
        """Did Apache load the configuration anew (False: skipped or denied, and ok)?"""
        return self.ok and self.how not in ("skipped", "denied")


def graceful(wait: float = 30.0, one_parse: bool = False) -> Reload:
    """Graceful reload of a running Apache, then wait for the new generation of children.

    A stopped Apache is left stopped: the change takes effect at its next start.
    Every path tests the configuration before it signals and refuses a
    failing one (the master keeps serving the old generation): systemd's
    ``ExecReload`` and ``apache2ctl graceful`` are ``apache2 -t`` then
    ``apache2 -k graceful``. ``one_parse``: run only the second half, as
    ``apache2ctl -k graceful`` (apache2ctl hands options through to apache2,
    with the same envvars): httpd reads and checks the whole configuration
    exactly as ``-t`` does and exits 1 before any signal when it fails
    (``test_reload_tested``), so the same test is made with one parse of the
    configuration instead of two.
    """
    pid = master_pid()
    if pid is None:
        return Reload(True, "skipped", "Apache is not running; the change takes effect at its next start")
    before = set(_children(pid))
    unit = _systemd_unit()
    if unit and _unit_active(unit):
        res = _result(proc.run(["systemctl", "reload", unit], env=environment(), merge_stderr=True, timeout=120))
        how, tested_by = "systemd", f"systemctl reload {unit} runs `apachectl graceful`"
    else:  # no systemd, or an Apache started outside its unit (systemctl would refuse to reload it)
        args = ["-k", "graceful"] if one_parse else ["graceful"]
        res, how, tested_by = run(args), "graceful", "apache2ctl " + " ".join(args)
    if not res.ok:
        return Reload(False, how, f"{' '.join(res.argv)} failed: {res.first_error}", tested_by)
    return _wait_new_generation(before, how, wait, tested_by)


def _wait_new_generation(before: "Set[int]", how: str, wait: float, tested_by: str = "") -> Reload:
    """After a reload command succeeded: wait until a child of the new generation exists."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now = master_pid()
        if now is None:
            return Reload(False, how, "Apache exited during the reload", tested_by)
        fresh = set(_children(now)) - before
        if fresh:
            lingering = _wait_gone(now, before, OLD_GENERATION_GRACE)
            extra = f"; {len(lingering)} old children still finishing requests" if lingering else ""
            return Reload(True, how, f"new generation serving (pid {now}, {len(fresh)} new children){extra}", tested_by)
        # Quick while the new generation is due; slower once Apache stalls (mpm_event can wait ~1 s).
        time.sleep(POLL if deadline - time.monotonic() > wait - 0.2 else 10 * POLL)
    return Reload(False, how, f"no new generation of children within {wait:.0f}s", tested_by)


# --- Service control: by hand, or from a maintainer script ---------------------


class ServiceControl:
    """How the transaction reloads or starts Apache (the one seam it calls).

    By hand (`BY_HAND`): the graceful path above; an operator's `apply`
    reloads. From a maintainer script (`MAINTAINER`): Debian Policy 9.3.3
    wants every service action through ``invoke-rc.d``, which asks
    ``policy-rc.d`` (chroots, image builds, piuparts forbid actions there).
    """

    name = "by hand"

    def reload(self, one_parse: bool = False) -> Reload:
        """Reload gracefully, testing the configuration first (``one_parse``: see `graceful`)."""
        return graceful(one_parse=one_parse)

    def start(self) -> Reload:
        res = run(["start"])
        # What apache2ctl said, even on exit 0: "httpd (pid N) already running" started nothing.
        said = (res.output.strip().splitlines() or ["started"])[-1] if res.ok else res.first_error
        return Reload(res.ok, "apache2ctl start", said)


class InvokeRcD(ServiceControl):
    """``invoke-rc.d --disclose-deny apache2 ACTION``: exit 101 means policy-rc.d denied it.

    invoke-rc.d interprets policy-rc.d itself (we keep no copy of its exit
    codes); ``--disclose-deny`` only makes a denial visible as 101 instead of 0,
    so that we do not claim a reload that did not happen. The init script (or
    systemd unit) it runs honours ``APACHE_CONFDIR``.
    """

    name = "invoke-rc.d"
    service = "apache2"

    def _invoke(self, action: str) -> Optional[Reload]:
        """None when invoke-rc.d did the action, else what stopped it (denied, or failed)."""
        r = proc.run(["invoke-rc.d", "--disclose-deny", self.service, action], env=environment(), merge_stderr=True,
                     timeout=180)
        if r.returncode == 101:
            return Reload(True, "denied", f"policy-rc.d denied {action} of {self.service} (invoke-rc.d exit 101)")
        if not r.ok:
            said = r.error or _result(r).first_error
            return Reload(False, self.name, f"{r.command} failed"
                          + (f" (exit {r.returncode})" if r.returncode is not None else "") + (f": {said}" if said else ""))
        return None

    def reload(self, one_parse: bool = False) -> Reload:
        pid = master_pid()
        if pid is None:
            return Reload(True, "skipped", "Apache is not running; the change takes effect at its next start")
        before = set(_children(pid))
        verdict = self._invoke("reload")
        # The init script's and the systemd unit's reload both run `apachectl graceful` (-t first).
        return verdict if verdict is not None else _wait_new_generation(
            before, self.name, 30.0, f"invoke-rc.d {self.service} reload runs `apachectl graceful`")

    def start(self) -> Reload:
        verdict = self._invoke("start")
        return verdict if verdict is not None else Reload(True, self.name, "started")


BY_HAND = ServiceControl()
MAINTAINER = InvokeRcD()


#: How long to wait for the old generation to let go of the listeners. An old child
#: that has not yet read the graceful signal may still accept a connection, which
#: would show the live check the *old* configuration; busy ones finish their
#: requests in their own time (graceful), so the wait is bounded.
OLD_GENERATION_GRACE = 3.0
#: How often the waits after a reload look at Apache's children (a list read from /proc).
POLL = 0.005


def _wait_gone(master: int, old: "Set[int]", grace: float) -> "Set[int]":
    """Wait (at most grace seconds) until none of the old children is left; returns those left."""
    deadline = time.monotonic() + grace
    left = old & set(_children(master))
    while left and time.monotonic() < deadline:
        time.sleep(POLL)
        left = old & set(_children(master))
    return left


# --- Where the server listens (for the live check) ------------------------------


def listening_sockets() -> Dict[int, List[str]]:
    """Port -> local addresses with a TCP socket listening on it (Linux /proc/net/tcp{,6}), in order.

    The live check must reach the vhost from this host: ``*:443`` says
    nothing about where Apache listens (``Listen 10.1.2.3:443`` is common on
    multi-homed CNs). A wildcard listener is reached through loopback.
    First through the kernel's socket diagnostics (netlink ``sock_diag``,
    as ``ss -ltn`` asks): it returns the listening sockets only. The files
    are the fallback: reading them costs milliseconds of kernel time (it
    walks every socket, thousands in TIME_WAIT after a live check or under
    load). The transaction asks once, in a thread (`transaction.Background`). Never by
    connecting to Apache: a connection an old child holds at the graceful
    signal can delay the new generation by mpm_event's one-second sleep.
    """
    got = _listening_netlink()
    if got is not None:
        return got
    out: Dict[int, List[str]] = {}
    for path, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            if " 0A " not in line:  # cheap pre-filter: after a live check, thousands of TIME_WAIT lines
                continue
            fields = line.split(None, 4)
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            _add_listener(out, int(hexport, 16), _proc_addr(hexaddr, family), family == 4)
    return out


def _add_listener(out: Dict[int, List[str]], port: int, addr: str, ipv4: bool) -> None:
    """Note one listening socket; a wildcard one is reached through loopback."""
    if addr in ("0.0.0.0", "::"):
        addr = "127.0.0.1" if ipv4 else "::1"
    got = out.setdefault(port, [])
    if addr not in got:
        got.append(addr)


def _listening_netlink() -> Optional[Dict[int, List[str]]]:
    """`listening_sockets` through NETLINK_SOCK_DIAG (TCP, state LISTEN, IPv4 then IPv6); None if it fails."""
    import socket  # here, not at the top: `monitor` imports this module every minute and never asks
    import struct

    out: Dict[int, List[str]] = {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # 4: NETLINK_SOCK_DIAG
            nl.settimeout(5.0)
            for seq, family in ((1, socket.AF_INET), (2, socket.AF_INET6)):
                # inet_diag_req_v2: family, IPPROTO_TCP, no extensions, pad, states = 1 << TCP_LISTEN (10),
                # then an all-zero inet_diag_sockid (48 bytes): every socket in those states.
                req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
                # nlmsghdr: SOCK_DIAG_BY_FAMILY (20), NLM_F_REQUEST | NLM_F_DUMP (0x301)
                nl.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, seq, 0) + req)
                done = False
                while not done:
                    data = nl.recv(65536)
                    off = 0
                    while off + 16 <= len(data):
                        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                        if length < 16:
                            return None
                        if kind == 3:  # NLMSG_DONE
                            done = True
                            break
                        if kind == 2:  # NLMSG_ERROR
                            return None
                        body = data[off + 16:off + length]
                        if len(body) >= 40:
                            fam, state = body[0], body[1]
                            port = struct.unpack_from("!H", body, 4)[0]
                            raw = body[8:12] if fam == socket.AF_INET else body[8:24]
                            if state == 10:
                                _add_listener(out, port, socket.inet_ntop(fam, raw), fam == socket.AF_INET)
                        off += (length + 3) & ~3
    except (OSError, struct.error, ValueError):
        return None
    return out


def listening_addresses(port: int) -> List[str]:
    """Local addresses with a TCP socket listening on port, in order (`listening_sockets`)."""
    return listening_sockets().get(port, [])


def _proc_addr(hexaddr: str, family: int) -> str:
    """/proc/net/tcp's address notation: 32-bit words in host (little-endian) byte order."""
    import ipaddress  # here: `monitor` imports this module every minute and never reads these tables
    import struct

    words = [int(hexaddr[i:i + 8], 16) for i in range(0, len(hexaddr), 8)]
    raw = b"".join(struct.pack("<I", w) for w in words)
    return str(ipaddress.IPv4Address(raw) if family == 4 else ipaddress.IPv6Address(raw))


# --- Is Apache really serving? (after a start or reload on the way back) ------------


def master_state(pid: int) -> Optional[str]:
    """The process state letter from /proc/PID/stat (``Z`` zombie, ``S``, ``R`` ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def tls_answers(host: str, port: int, sni: Optional[str], timeout: float = 3.0) -> Tuple[bool, str]:
    """Does host:port complete a TLS handshake (no certificate checks: only "is it serving")?"""
    import socket  # here, not at the top: `monitor` imports this module every minute and never connects
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=sni or None) as tls:
                return True, f"{host}:{port} answers {tls.version()}"
    except (OSError, ssl.SSLError, ValueError) as exc:
        return False, f"{host}:{port} does not answer TLS ({exc})"


def stale_pid_file() -> Optional[str]:
    """The pid file, when it names a process that is gone or a zombie (``apache2ctl start`` then says
    "already running" and starts nothing); else None."""
    path = pid_file()
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return path if master_state(pid) in (None, "Z", "X", "x") else None


def verify_serving(target: Optional[Tuple[str, int, str]], wait: float = 10.0) -> Tuple[bool, str]:
    """Check, not assume, that Apache serves: master alive and not a zombie, and the vhost's port answers TLS.

    `run` returning 0 is not enough: ``apache2ctl start`` says "already
    running" about a master that is dead or a zombie. Retried for up to wait
    seconds (a fresh start takes a moment to listen). Returns (ok, what was seen).
    """
    deadline = time.monotonic() + wait
    seen = "Apache is not running"
    while True:
        pid = master_pid()
        state = master_state(pid) if pid is not None else None
        if pid is None or state is None or state in ("Z", "X", "x"):
            seen = "Apache is not running" + (f" (master pid {pid} is {state or 'gone'})" if pid is not None else
                                              f" (no live master process; pid file {pid_file()})")
        elif target is None:
            return True, f"master pid {pid} alive ({state})"
        else:
            ok, said = tls_answers(*target)
            if ok:
                return True, f"master pid {pid} alive, {said}"
            seen = f"Apache master pid {pid} is alive but {said}"
        if time.monotonic() >= deadline:
            return False, seen
        time.sleep(0.2)
