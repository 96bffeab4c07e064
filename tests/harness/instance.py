"""A complete, disposable Apache 2.4 instance for integration tests.

Why this shape: the package under test drives Apache the way an operator's
Debian host does (``apache2ctl``, ``sites-available``/``sites-enabled``,
``IncludeOptional sites-enabled/*.conf``).  Debian's ``apache2ctl`` honours
``APACHE_CONFDIR`` and ``APACHE_ENVVARS`` (the multi-instance convention), so
an instance whose every file -- config, pid file, run/lock/log dirs -- lives in
a temp directory behaves like the host's Apache without touching
``/etc/apache2``, ``/var/run/apache2`` or ``/var/log/apache2``.

Layout under ``root`` (the directory given to the constructor)::

    apache2/                 APACHE_CONFDIR (Debian layout, see _build)
      envvars                APACHE_ENVVARS
      apache2.conf ports.conf jk_mount
      mods-available/ mods-enabled/ conf-available/ conf-enabled/
      sites-available/cn-ssl.conf   sites-enabled/cn-ssl.conf -> ../sites-available/cn-ssl.conf
    run/ lock/ log/          APACHE_RUN_DIR, APACHE_LOCK_DIR, APACHE_LOG_DIR
    docroot/cn/index.html    so GET /cn/ answers 200 from a static file (a symlink to a
                             0755 dir in /tmp when root is not searchable by www-data)
    pki/                     test CA, server and client certificates (unless a Pki is passed)
    etc-dataone/cn-sslverify.conf   DATAONE_CN_SSLVERIFY_POLICY
    state/                   DATAONE_CN_SSLVERIFY_STATE_DIR (not created: the package does that)

Every process of the instance is recognisable by the ``-d <confdir>`` that
``apache2ctl`` puts on the ``apache2`` command line; ``stop()`` and the
emergency cleanup use that to make sure no stray server survives a test.
"""

import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from . import VARIANTS, render_fixture
from .pki import Pki, make_pki
from dataone_cn_sslverify import sslcompat
from dataone_cn_sslverify.records import dataclass, field

__all__ = ["ApacheInstance", "ApacheError", "CommandResult", "Response", "USER_AGENTS", "DEFAULT_MODULES"]

APACHE2CTL = "/usr/sbin/apache2ctl"
APACHE2 = "/usr/sbin/apache2"
CURL = "/usr/bin/curl"
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
HOST_MODS_AVAILABLE = Path("/etc/apache2/mods-available")
REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY_SOURCE = REPO_ROOT / "conf" / "cn-sslverify.conf"

#: Debian's default module set plus what a CN vhost needs (SSL, headers,
#: expires, proxy/AJP, rewrite).  Enabled by relative symlink, like a2enmod.
DEFAULT_MODULES: Sequence[str] = (
    # Debian defaults (apache2 package postinst)
    "mpm_event", "access_compat", "alias", "auth_basic", "authn_core", "authn_file",
    "authz_core", "authz_host", "authz_user", "autoindex", "deflate", "dir", "env",
    "filter", "mime", "negotiation", "reqtimeout", "setenvif", "status",
    # what the CN vhost uses
    "ssl", "socache_shmcb", "headers", "expires", "rewrite", "proxy", "proxy_ajp", "proxy_http",
)

def _user_agents() -> Dict[str, str]:
    """Short names for the User-Agents the tests send, from the package's client catalogue (the one list)."""
    import sys

    if str(REPO_ROOT) not in sys.path:  # bench/ and scripts use the harness without the repo on the path
        sys.path.append(str(REPO_ROOT))
    from dataone_cn_sslverify.clients import BROWSER_USER_AGENTS, get_client

    more = dict(BROWSER_USER_AGENTS)
    return {
        "ie11": get_client("browser-ie11-win7").user_agent,
        "ie10": more["Internet Explorer 10 (Windows 7)"],
        "edge-legacy": more["Edge Legacy (EdgeHTML)"],
        "safari": get_client("browser-safari-macos").user_agent,
        "chrome": more["Chrome (Linux)"],
        "firefox": get_client("browser-firefox").user_agent,
        "iphone": get_client("browser-safari-ios").user_agent,
        "curl": get_client("api-curl").user_agent,
        "python-requests": get_client("api-python-requests").user_agent,
        "java": get_client("api-java-httpclient").user_agent,
        "r-httr": get_client("api-r-httr").user_agent,
        "d1-libclient-java": get_client("api-d1-java").user_agent,
    }


#: User-Agent strings the tests need: the browsers of the incident and the API clients.
USER_AGENTS: Dict[str, str] = _user_agents()

_JK_MOUNT = """\
# jk_mount -- Tomcat mounts for the CN, maintained by dataone-cn-os-core.
# (Test stand-in: mod_jk is not installed, so everything is wrapped in
# <IfModule> and the paths fall through to the static docroot.)
<IfModule mod_jk.c>
\tJkMount /cn/* ajp13
\tJkMount /metacat ajp13
\tJkMount /metacat/* ajp13
\tJkMount /portal/* ajp13
\tJkMount /solr/* ajp13
\tJkUnMount /cn/index.html ajp13
</IfModule>
"""

_CN_INDEX = """\
<!DOCTYPE html>
<html><head><title>DataONE Coordinating Node (test)</title></head>
<body><p>dataone-cn-sslverify test harness: static /cn/ index</p></body></html>
"""
#: A string the tests can look for in the body of GET /cn/.
CN_INDEX_MARKER = "dataone-cn-sslverify test harness: static /cn/ index"
REPLICATION_MARKER = "dataone-cn-sslverify test harness: replication endpoint"


class ApacheError(RuntimeError):
    """The instance could not be built, started, reloaded or stopped."""


@dataclass
class CommandResult:
    """Outcome of one ``apache2ctl`` call (text output, both streams)."""

    args: List[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Response:
    """What one client request observed.

    ``status`` is 0 when no HTTP response came back (TLS failure, reset).
    ``cert_request_initial`` / ``cert_request_post`` come from the client's
    view of the handshake messages (curl ``-v`` prints every TLS handshake
    message): a CertificateRequest before the connection was established is
    the initial handshake; one after it is a renegotiation (TLS 1.2, preceded
    by a HelloRequest) or post-handshake authentication (TLS 1.3).  ``None``
    means the client cannot tell (the Python client).
    """

    status: int
    stderr: str
    client_verify: Optional[str]
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    exit_code: int = 0
    tls_version: Optional[str] = None
    http_version: Optional[str] = None
    server_subject: Optional[str] = None
    server_issuer: Optional[str] = None
    cert_request_initial: Optional[bool] = None
    cert_request_post: Optional[bool] = None
    hello_request: Optional[bool] = None
    args: List[str] = field(default_factory=list)

    @property
    def cert_requested(self) -> Optional[bool]:
        """Did the server ask this client for a certificate at any point?"""
        if self.cert_request_initial is None and self.cert_request_post is None:
            return None
        return bool(self.cert_request_initial) or bool(self.cert_request_post)

    def __str__(self) -> str:  # readable in assertion messages
        return "Response(status=%s, client_verify=%s, tls=%s, cert_requested=%s, exit=%s)\n--- client log ---\n%s" % (
            self.status, self.client_verify, self.tls_version, self.cert_requested, self.exit_code, self.stderr[-4000:],
        )


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0, read it back, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def _pids_with_confdir(confdir: Path) -> List[int]:
    """PIDs of every ``apache2`` process started with ``-d <confdir>``.

    Why /proc and not the pid file: children and a parent whose pid file was
    removed (or never written) must be found too.
    """
    want = str(confdir).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"apache2"):
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-d" and argv[i + 1].rstrip(b"/") == want:
                pids.append(int(entry))
                break
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _uid(pid: int) -> Optional[int]:
    """Real uid of a process (None if it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _live_pids(confdir: Path) -> List[int]:
    return [p for p in _pids_with_confdir(confdir) if not _is_zombie(p)]


def _kill_all(confdir: Path) -> List[int]:
    """SIGKILL every process of one instance (by pid, found via its confdir)."""
    killed = []
    for pid in _live_pids(confdir):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def _searchable_by_others(path: Path) -> bool:
    """True if every directory from ``/`` down to ``path`` has the ``o+x`` bit."""
    p = path.resolve()
    for d in [p] + list(p.parents):
        if not os.stat(str(d)).st_mode & stat.S_IXOTH:
            return False
    return True


def _make_docroot(root: Path) -> Path:
    """Where the static docroot lives, and why it may not be ``root/docroot``.

    Apache's children run as ``www-data`` and need search permission on every
    ancestor of the docroot.  pytest's temp tree (``/tmp/pytest-of-root``) is
    0700, and every pytest session that starts re-tightens it -- so chmod-ing
    it is racy when sessions run in parallel (measured: intermittent
    ``AH00035 ... search permissions are missing``, answered 403).  Under such
    a tree the docroot goes to its own ``mkdtemp`` dir in the system temp dir
    (mode 0755), and ``root/docroot`` becomes a symlink to it.
    """
    inside = root / "docroot"
    if _searchable_by_others(root):
        inside.mkdir(exist_ok=True)
        return inside
    outside = Path(tempfile.mkdtemp(prefix="dataone-cn-harness-docroot-"))
    os.chmod(str(outside), 0o755)
    if not _searchable_by_others(outside):
        raise ApacheError("cannot place a docroot that www-data can read (%s is not searchable)" % outside)
    if inside.is_symlink() or inside.exists():
        inside.unlink()
    os.symlink(str(outside), str(inside))
    return outside


def _finalize(confdir: Path, external_docroot: Optional[Path]) -> None:
    """Last-resort cleanup (garbage collection or interpreter exit)."""
    _kill_all(confdir)
    if external_docroot is not None:
        shutil.rmtree(str(external_docroot), ignore_errors=True)


class ApacheInstance:
    """One Apache 2.4 instance with the CN SSL vhost, in its own directory.

    Building happens in the constructor (nothing runs until ``start()``), so a
    test can patch the vhost first.  Use as a context manager to guarantee the
    server is stopped::

        with ApacheInstance(tmp_path, variant="webkit-only") as inst:
            inst.start()
            r = inst.request("/cn/", user_agent=USER_AGENTS["ie11"], tls="1.2")
    """

    def __init__(
        self,
        root: Union[str, "os.PathLike[str]"],
        variant: str = "webkit-only",
        *,
        server_name: str = "cn.dataone.test",
        pki: Optional[Pki] = None,
        loglevel: str = "warn ssl:info",
        vhost: Optional[Union[str, bytes]] = None,
        modules: Sequence[str] = DEFAULT_MODULES,
        extra_modules: Sequence[str] = (),
        policy_source: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> None:
        """Build the instance under ``root`` (created if needed; must be empty of a previous instance).

        ``variant`` picks the fixture vhost; ``vhost`` (text or bytes, placeholders
        allowed) replaces it entirely.  ``pki`` lets a session share one PKI;
        without it a fresh one is made in ``root/pki``.
        """
        if variant not in VARIANTS:
            raise ValueError("unknown variant %r; expected one of %s" % (variant, ", ".join(VARIANTS)))
        self.root = Path(root).resolve()
        if re.search(r"\s", str(self.root)):
            # apache2ctl uses $APACHE_ENVVARS unquoted.
            raise ApacheError("instance path must not contain whitespace: %s" % self.root)
        self.variant = variant
        self.server_name = server_name
        self.loglevel = loglevel
        self.confdir = self.root / "apache2"
        self.envvars = self.confdir / "envvars"
        self.run_dir = self.root / "run"
        self.lock_dir = self.root / "lock"
        self.log_dir = self.root / "log"
        self.pid_file = self.run_dir / "apache2.pid"
        self.root.mkdir(parents=True, exist_ok=True)
        # May be outside root (see _make_docroot); root/docroot then links to it.
        self.docroot = _make_docroot(self.root)
        # Safety net: at garbage collection or interpreter exit, kill this
        # instance's processes and remove an external docroot.
        external = self.docroot if self.docroot != self.root / "docroot" else None
        self._finalizer = weakref.finalize(self, _finalize, self.confdir, external)
        self.state_dir = self.root / "state"
        self.policy_path = self.root / "etc-dataone" / "cn-sslverify.conf"
        self.vhost_path = self.confdir / "sites-available" / "cn-ssl.conf"
        self.vhost_link = self.confdir / "sites-enabled" / "cn-ssl.conf"
        self.jk_mount = self.confdir / "jk_mount"
        self.error_log_path = self.log_dir / "error.log"
        self.access_log_path = self.log_dir / "cn-ssl-access.log"
        self.https_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.https_port:
            self.http_port = free_port()
        self.pki = pki if pki is not None else make_pki(self.root / "pki", server_name)
        if self.pki.server_name != server_name:
            raise ApacheError("pki was made for %r, instance serves %r" % (self.pki.server_name, server_name))
        self.policy_source: Path = POLICY_SOURCE
        self._vhost_template = vhost.encode() if isinstance(vhost, str) else vhost
        self._rendered_vhost = b""
        self._build(list(modules) + [m for m in extra_modules if m not in modules], policy_source)

    # ------------------------------------------------------------------ build

    def values(self) -> Dict[str, str]:
        """Placeholder values of this instance (keys as ``render_fixture`` takes them)."""
        return {
            "server_name": self.server_name,
            "https_port": str(self.https_port),
            "http_port": str(self.http_port),
            "cert_dir": str(self.pki.dir),
            "docroot": str(self.docroot),
            "apache_confdir": str(self.confdir),
            "log_dir": str(self.log_dir),
        }

    def render(self, variant: Optional[str] = None) -> bytes:
        """The fixture vhost of ``variant`` (default: this instance's) rendered for this instance."""
        return render_fixture(variant or self.variant, **self.values())

    def _build(self, modules: List[str], policy_source: Optional[Union[str, "os.PathLike[str]"]]) -> None:
        for d in (self.confdir, self.run_dir, self.lock_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        for sub in ("mods-available", "mods-enabled", "conf-available", "conf-enabled",
                    "sites-available", "sites-enabled"):
            (self.confdir / sub).mkdir(exist_ok=True)

        # Debian's module snippets, verbatim (read-only use of the host's files).
        if not HOST_MODS_AVAILABLE.is_dir():
            raise ApacheError("%s missing: install Debian's apache2 package" % HOST_MODS_AVAILABLE)
        for src in HOST_MODS_AVAILABLE.iterdir():
            if src.suffix in (".load", ".conf"):
                shutil.copyfile(str(src), str(self.confdir / "mods-available" / src.name))
        for m in modules:
            self.enable_module(m)

        self.envvars.write_text(self._envvars_text())
        self._write_apache2_conf()
        self._write_ports_conf()
        (self.confdir / "conf-available" / "servername.conf").write_text(
            "# Silences AH00558 (the host has no resolvable FQDN in a test box)\nServerName localhost\n"
        )
        self.enable_conf("servername")
        self.jk_mount.write_text(_JK_MOUNT)

        # Static content: /cn/ (DirectoryIndex) and the replication servlet path.
        (self.docroot / "cn").mkdir(exist_ok=True)
        (self.docroot / "cn" / "index.html").write_text(_CN_INDEX)
        (self.docroot / "metacat" / "servlet").mkdir(parents=True, exist_ok=True)
        (self.docroot / "metacat" / "servlet" / "replication").write_text(REPLICATION_MARKER + "\n")
        (self.docroot / "index.html").write_text("<html><body>DataONE</body></html>\n")
        for dirpath, dirnames, filenames in os.walk(str(self.docroot)):
            os.chmod(dirpath, 0o755)
            for fn in filenames:
                os.chmod(os.path.join(dirpath, fn), 0o644)

        # Policy snippet the package includes (its conffile, relocated).
        self.policy_path.parent.mkdir(parents=True, exist_ok=True)
        src_policy = Path(policy_source) if policy_source is not None else POLICY_SOURCE
        shutil.copyfile(str(src_policy), str(self.policy_path))  # the repository's conf/: one copy of the policy
        self.policy_source = src_policy

        # The vhost, enabled the way a2ensite does it.
        self._render_vhost()
        if self.vhost_link.is_symlink() or self.vhost_link.exists():
            self.vhost_link.unlink()
        os.symlink("../sites-available/cn-ssl.conf", str(self.vhost_link))

    def _render_vhost(self) -> None:
        if self._vhost_template is None:
            data = self.render()
        else:
            from . import render_placeholders

            data = render_placeholders(self._vhost_template, self.values(), strict=False)
        self._rendered_vhost = data
        self.vhost_path.write_bytes(data)

    def _envvars_text(self) -> str:
        return (
            "# envvars -- test instance (Debian multi-instance convention)\n"
            "unset HOME\n"
            "export APACHE_RUN_USER=www-data\n"
            "export APACHE_RUN_GROUP=www-data\n"
            "export APACHE_PID_FILE=%s\n"
            "export APACHE_RUN_DIR=%s\n"
            "export APACHE_LOCK_DIR=%s\n"
            "export APACHE_LOG_DIR=%s\n"
            "export LANG=C\n"
            "export LANG\n"
        ) % (self.pid_file, self.run_dir, self.lock_dir, self.log_dir)

    def _write_apache2_conf(self) -> None:
        (self.confdir / "apache2.conf").write_text(
            "# apache2.conf -- test instance, shaped like Debian's /etc/apache2/apache2.conf\n"
            "DefaultRuntimeDir ${APACHE_RUN_DIR}\n"
            "PidFile ${APACHE_PID_FILE}\n"
            "Timeout 30\n"
            "KeepAlive On\n"
            "MaxKeepAliveRequests 100\n"
            "KeepAliveTimeout 5\n"
            "User ${APACHE_RUN_USER}\n"
            "Group ${APACHE_RUN_GROUP}\n"
            "HostnameLookups Off\n"
            "ErrorLog ${APACHE_LOG_DIR}/error.log\n"
            "LogLevel %s\n"
            "IncludeOptional mods-enabled/*.load\n"
            "IncludeOptional mods-enabled/*.conf\n"
            "Include ports.conf\n"
            "<Directory />\n\tOptions FollowSymLinks\n\tAllowOverride None\n\tRequire all denied\n</Directory>\n"
            "<Directory /usr/share>\n\tAllowOverride None\n\tRequire all granted\n</Directory>\n"
            "<Directory %s/>\n\tOptions Indexes FollowSymLinks\n\tAllowOverride None\n\tRequire all granted\n</Directory>\n"
            "AccessFileName .htaccess\n"
            "<FilesMatch \"^\\.ht\">\n\tRequire all denied\n</FilesMatch>\n"
            "LogFormat \"%%v:%%p %%h %%l %%u %%t \\\"%%r\\\" %%>s %%O \\\"%%{Referer}i\\\" \\\"%%{User-Agent}i\\\"\" vhost_combined\n"
            "LogFormat \"%%h %%l %%u %%t \\\"%%r\\\" %%>s %%O \\\"%%{Referer}i\\\" \\\"%%{User-Agent}i\\\"\" combined\n"
            "LogFormat \"%%h %%l %%u %%t \\\"%%r\\\" %%>s %%O\" common\n"
            "IncludeOptional conf-enabled/*.conf\n"
            "IncludeOptional sites-enabled/*.conf\n" % (self.loglevel, self.docroot)
        )

    def _write_ports_conf(self) -> None:
        (self.confdir / "ports.conf").write_text(
            "# ports.conf -- test instance: loopback only, free ports picked at build time\n"
            "Listen 127.0.0.1:%d\n"
            "<IfModule ssl_module>\n\tListen 127.0.0.1:%d\n</IfModule>\n"
            "<IfModule mod_gnutls.c>\n\tListen 127.0.0.1:%d\n</IfModule>\n"
            % (self.http_port, self.https_port, self.https_port)
        )

    def set_loglevel(self, loglevel: str) -> None:
        """Rewrite ``LogLevel`` in apache2.conf (takes effect at the next start/graceful)."""
        self.loglevel = loglevel
        self._write_apache2_conf()

    def enable_module(self, name: str) -> None:
        """``a2enmod name`` for this instance: relative symlinks for .load and .conf."""
        found = False
        for ext in (".load", ".conf"):
            src = self.confdir / "mods-available" / (name + ext)
            if src.exists():
                found = True
                link = self.confdir / "mods-enabled" / (name + ext)
                if not link.is_symlink():
                    os.symlink("../mods-available/" + name + ext, str(link))
        if not found:
            raise ApacheError("no module %r in %s" % (name, self.confdir / "mods-available"))

    def disable_module(self, name: str) -> None:
        """``a2dismod name`` for this instance."""
        for ext in (".load", ".conf"):
            link = self.confdir / "mods-enabled" / (name + ext)
            if link.is_symlink():
                link.unlink()

    def enable_conf(self, name: str, text: Optional[str] = None) -> Path:
        """``a2enconf name`` (writing ``conf-available/name.conf`` first when ``text`` is given)."""
        src = self.confdir / "conf-available" / (name + ".conf")
        if text is not None:
            src.write_text(text)
        if not src.exists():
            raise ApacheError("no conf %s" % src)
        link = self.confdir / "conf-enabled" / (name + ".conf")
        if not link.is_symlink():
            os.symlink("../conf-available/" + name + ".conf", str(link))
        return src

    # ------------------------------------------------------------------ vhost

    def write_vhost(self, data: Union[str, bytes]) -> None:
        """Replace the live vhost file (the symlink's target) with ``data`` as is."""
        self.vhost_path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)

    def vhost_bytes(self) -> bytes:
        """Current bytes of the live vhost file."""
        return self.vhost_path.read_bytes()

    def rendered_vhost(self) -> bytes:
        """The vhost exactly as the harness wrote it at build time."""
        return self._rendered_vhost

    # ------------------------------------------------------------------ control

    def env(self) -> Dict[str, str]:
        """Environment for anything that must act on this instance (apache2ctl, the package).

        ``PATH`` is pinned so Debian's tools (not pyenv's) are found.
        """
        e = dict(os.environ)
        e.update(
            PATH=SAFE_PATH,
            APACHE_CONFDIR=str(self.confdir),
            APACHE_ENVVARS=str(self.envvars),
            DATAONE_CN_SSLVERIFY_STATE_DIR=str(self.state_dir),
            DATAONE_CN_SSLVERIFY_POLICY=str(self.policy_path),
            # the live gate verifies API clients with a certificate the vhost trusts (docs/gate.md)
            DATAONE_CN_SSLVERIFY_CLIENT_CERT=str(self.pki.client_pem),
        )
        return e

    def apache2ctl(self, *args: str, timeout: float = 60, extra_env: Optional[Dict[str, str]] = None) -> CommandResult:
        """Run Debian's ``apache2ctl`` with this instance's environment."""
        env = self.env()
        if extra_env:
            env.update(extra_env)
        argv = [APACHE2CTL] + list(args)
        proc = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout, check=False,
        )
        return CommandResult(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                             proc.stderr.decode("utf-8", "replace"))

    def configtest(self) -> CommandResult:
        """``apache2ctl configtest``; ``.ok`` tells the verdict, ``.output`` the reason."""
        return self.apache2ctl("configtest")

    def pid(self) -> Optional[int]:
        """PID from the pid file, if the file exists and names a live process."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _is_zombie(pid) or not os.path.exists("/proc/%d" % pid):
            return None
        return pid

    def processes(self) -> List[int]:
        """PIDs of every live process of this instance (parent and children)."""
        return _live_pids(self.confdir)

    def is_running(self) -> bool:
        """True when the parent named in the pid file is alive."""
        pid = self.pid()
        return pid is not None and pid in self.processes()

    def _answers_https(self, timeout: float = 1.0) -> bool:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=timeout) as s:
                with ctx.wrap_socket(s, server_hostname=self.server_name):
                    return True
        except (OSError, ssl.SSLError):
            return False

    def _generations(self) -> int:
        """How many times the error log says the server (re)started serving."""
        return self.error_log().count("resuming normal operations")

    def start(self, timeout: float = 20) -> None:
        """Start the server and return once it completes a TLS handshake.

        ``APACHE_STARTED_BY_SYSTEMD`` is set for this one call because
        ``apache2ctl start`` otherwise delegates to ``systemctl start apache2@...``
        when PID 1 is systemd, which would not run *this* instance.
        """
        if self.is_running():
            raise ApacheError("already running (pid %s)" % self.pid())
        if self.pid_file.exists() and self.pid() is None:
            # Stale pid file of a killed parent.  If that parent is still an
            # unreaped zombie (PID 1 of a container may not reap), httpd's own
            # check (kill(pid, 0)) would say "already running" and exit 0.
            self.pid_file.unlink()
        for attempt in range(3):
            log_offset = self._log_size()
            r = self.apache2ctl("start", extra_env={"APACHE_STARTED_BY_SYSTEMD": "true"})
            if r.ok and "already running" in r.output:
                raise ApacheError("apache2ctl start: %s" % r.output.strip())
            if not r.ok:
                raise ApacheError("apache2ctl start failed (rc=%d):\n%s\n--- error log ---\n%s"
                                  % (r.returncode, r.output, self.error_log()[-3000:]))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.is_running() and self._answers_https(0.5):
                    return
                if not self.processes() and time.monotonic() > deadline - timeout + 1.0:
                    break  # the daemon died (bind error, bad cert, ...)
                time.sleep(0.05)
            new_log = self._read_log_from(log_offset)
            self._kill_leftovers()
            if "Address already in use" in new_log and self.vhost_bytes() == self._rendered_vhost and attempt < 2:
                # Lost the race for a port picked at build time: pick again.
                self.https_port, self.http_port = free_port(), free_port()
                self._write_ports_conf()
                self._render_vhost()
                continue
            raise ApacheError("Apache did not come up on 127.0.0.1:%d within %ss\n--- error log ---\n%s"
                              % (self.https_port, timeout, new_log[-3000:]))

    def graceful(self, timeout: float = 20) -> CommandResult:
        """``apache2ctl graceful``; on success wait until the new generation serves.

        Debian's apache2ctl config-tests first and does nothing on a broken
        config (the result then is not ok and the old generation keeps serving).
        """
        before = self._generations()
        old_children = set(self.processes()) - {self.pid()}
        r = self.apache2ctl("graceful")
        if not r.ok:
            return r
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._generations() > before and self._answers_https(0.5):
                # An old child that has not yet seen the graceful signal may still accept a
                # connection and answer with the old configuration: wait (bounded) for them.
                settle = time.monotonic() + 3.0
                while old_children & set(self.processes()) and time.monotonic() < settle:
                    time.sleep(0.05)
                return r
            time.sleep(0.05)
        raise ApacheError("graceful restart did not complete within %ss\n--- error log ---\n%s"
                          % (timeout, self.error_log()[-3000:]))

    def stop(self, timeout: float = 20, strict: bool = True) -> float:
        """Stop the server and wait until none of its processes is left.

        Returns the seconds it took.  If processes remain after ``timeout`` they
        are SIGKILLed (by pid) and, when ``strict``, ``ApacheError`` is raised:
        a server that does not stop cleanly is a finding, not noise.
        """
        t0 = time.monotonic()
        if not self.processes():
            return 0.0
        if self.pid() is not None:
            self.apache2ctl("stop", timeout=timeout)
        else:
            # No valid pid file (deleted, or the parent was killed): signal any
            # live parent directly -- parents run as root, children as www-data.
            for p in self.processes():
                if _uid(p) == 0:
                    try:
                        os.kill(p, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            left = self.processes()
            if not left:
                return time.monotonic() - t0
            if not any(_uid(p) == 0 for p in left):
                # Orphaned children of a dead parent (e.g. it was SIGKILLed):
                # nobody will ever tell them to exit, and they still hold the
                # listening sockets.  Not a failure of stop(): kill them.
                self._kill_leftovers()
                return time.monotonic() - t0
            time.sleep(0.05)
        killed = self._kill_leftovers()
        if strict:
            raise ApacheError("Apache did not stop within %ss; killed %s" % (timeout, killed))
        return time.monotonic() - t0

    def _kill_leftovers(self) -> List[int]:
        killed = _kill_all(self.confdir)
        end = time.monotonic() + 5
        while self.processes() and time.monotonic() < end:
            time.sleep(0.05)
        return killed

    def cleanup(self) -> None:
        """Stop whatever is left, never raising (for fixture finalizers)."""
        try:
            self.stop(strict=False)
        except Exception:  # noqa: BLE001 -- cleanup must not mask the test's own error
            self._kill_leftovers()

    def __enter__(self) -> "ApacheInstance":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ logs

    def _log_size(self) -> int:
        try:
            return self.error_log_path.stat().st_size
        except OSError:
            return 0

    def _read_log_from(self, offset: int) -> str:
        try:
            with open(str(self.error_log_path), "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def error_log(self) -> str:
        """Whole text of the instance's error log ('' before the first start)."""
        return self._read_log_from(0)

    def error_log_mark(self) -> int:
        """Current end of the error log; pass to ``error_log_since`` to see only new lines."""
        return self._log_size()

    def error_log_since(self, mark: int, settle: float = 0.2) -> str:
        """Error log text written after ``mark`` (waits ``settle`` s: children write asynchronously)."""
        if settle:
            time.sleep(settle)
        return self._read_log_from(mark)

    def access_log(self) -> str:
        """Text of the vhost's CustomLog."""
        try:
            return self.access_log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ clients

    def url(self, path: str = "/", scheme: str = "https") -> str:
        port = self.https_port if scheme == "https" else self.http_port
        return "%s://%s:%d%s" % (scheme, self.server_name, port, path)

    def _client_cert(self, cert: Union[bool, str, Path, None]) -> Optional[Path]:
        if cert is None or cert is False:
            return None
        if cert == "trusted" or cert is True:
            return self.pki.client_pem
        if cert == "untrusted":
            return self.pki.untrusted_pem
        if isinstance(cert, (str, Path)) and Path(cert).is_file():
            return Path(cert)
        raise ValueError("cert must be False, 'trusted', 'untrusted' or a PEM path, not %r" % (cert,))

    def request(
        self,
        path: str = "/cn/",
        user_agent: Optional[str] = None,
        cert: Union[bool, str, Path, None] = False,
        tls: Optional[str] = None,
        http2: bool = False,
        *,
        scheme: str = "https",
        method: Optional[str] = None,
        data: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: float = 15,
        extra_args: Sequence[str] = (),
    ) -> Response:
        """One request with the real curl, as an API client or a browser would send it.

        ``--resolve`` maps ``server_name`` to 127.0.0.1 so SNI and the Host
        header carry the real name, and ``--cacert`` verifies the server against
        the test CA.  ``tls`` pins the version ("1.2" or "1.3").  ``user_agent``
        None keeps curl's own. ``cert``: False, "trusted", "untrusted" or a PEM path.
        """
        if tls not in (None, "1.2", "1.3"):
            raise ValueError("tls must be None, '1.2' or '1.3'")
        work = Path(tempfile.mkdtemp(prefix="curl-", dir=str(self.root)))
        try:
            body_f, head_f = work / "body", work / "headers"
            port = self.https_port if scheme == "https" else self.http_port
            args = [
                CURL, "-sS", "-v", "--max-time", str(timeout),
                "--resolve", "%s:%d:127.0.0.1" % (self.server_name, port),
                "--cacert", str(self.pki.ca_cert),
                "-o", str(body_f), "-D", str(head_f), "-w", "%{http_code}",
                "--http2" if http2 else "--http1.1",
            ]
            if tls == "1.2":
                args += ["--tlsv1.2", "--tls-max", "1.2"]
            elif tls == "1.3":
                args += ["--tlsv1.3", "--tls-max", "1.3"]
            if user_agent is not None:
                args += ["-A", user_agent]
            client = self._client_cert(cert)
            if client is not None:
                args += ["--cert", str(client)]
            for k, v in (headers or {}).items():
                args += ["-H", "%s: %s" % (k, v)]
            if data is not None:
                data_f = work / "data"
                data_f.write_bytes(data)
                args += ["--data-binary", "@" + str(data_f), "-H", "Content-Type: application/octet-stream"]
            if method:
                args += ["-X", method]
            args += list(extra_args)
            args.append(self.url(path, scheme))
            proc = subprocess.run(args, env=dict(os.environ, PATH=SAFE_PATH), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 10, check=False)
            stderr = proc.stderr.decode("utf-8", "replace")
            try:
                status = int(proc.stdout.decode().strip() or "0")
            except ValueError:
                status = 0
            hdrs = _parse_headers(head_f.read_bytes() if head_f.exists() else b"")
            body = body_f.read_bytes() if body_f.exists() else b""
        finally:
            shutil.rmtree(str(work), ignore_errors=True)
        return _curl_response(status, stderr, hdrs, body, proc.returncode, args)

    def python_request(
        self,
        path: str = "/cn/",
        user_agent: Optional[str] = None,
        cert: Union[bool, str, Path, None] = False,
        tls: Optional[str] = None,
        *,
        post_handshake_auth: Optional[bool] = None,
        no_renegotiation: bool = False,
        timeout: float = 10,
    ) -> Response:
        """One HTTP/1.1 GET with Python's ``ssl`` module (stdlib), for client profiles curl cannot play.

        ``post_handshake_auth``: None keeps the bare-context default (off), which
        is how Java/Go-like clients without TLS 1.3 PHA behave.
        ``no_renegotiation``: refuse a TLS 1.2 renegotiation like IE on Windows 7
        (``OP_NO_RENEGOTIATION``).  The client cannot tell whether a
        certificate was requested, so ``cert_requested`` is None.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.pki.ca_cert))
        ctx.check_hostname = True
        if tls == "1.2":
            sslcompat.set_range(ctx, minimum=sslcompat.TLSv1_2, maximum=sslcompat.TLSv1_2)
        elif tls == "1.3":
            sslcompat.set_range(ctx, minimum=sslcompat.TLSv1_3, maximum=sslcompat.TLSv1_3)
        elif tls is not None:
            raise ValueError("tls must be None, '1.2' or '1.3'")
        client = self._client_cert(cert)
        if client is not None:
            ctx.load_cert_chain(str(client))
        if post_handshake_auth is not None:
            sslcompat.set_post_handshake_auth(ctx, post_handshake_auth)
        if no_renegotiation:
            ctx.options |= sslcompat.OP_NO_RENEGOTIATION
        req = "GET %s HTTP/1.1\r\nHost: %s:%d\r\n" % (path, self.server_name, self.https_port)
        if user_agent is not None:
            req += "User-Agent: %s\r\n" % user_agent
        req += "Accept: */*\r\nConnection: close\r\n\r\n"
        raw = b""
        version = None
        error = ""
        try:
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=timeout) as s:
                with ctx.wrap_socket(s, server_hostname=self.server_name) as ss:
                    version = ss.version()
                    ss.sendall(req.encode("latin-1"))
                    while True:
                        chunk = ss.recv(65536)
                        if not chunk:
                            break
                        raw += chunk
        except (OSError, ssl.SSLError) as exc:
            error = "%s: %s" % (type(exc).__name__, exc)
        status, hdrs, body = _parse_raw_http(raw)
        return Response(
            status=status, stderr=error, client_verify=hdrs.get("x-test-client-verify"), headers=hdrs,
            body=body, exit_code=0 if not error else 1, tls_version=version, http_version="1.1" if status else None,
            args=["python-ssl", path, "tls=%s" % tls, "pha=%s" % post_handshake_auth,
                  "no_reneg=%s" % no_renegotiation],
        )


# ---------------------------------------------------------------------- parsing


def _parse_headers(raw: bytes) -> Dict[str, str]:
    """Headers of the last response block in a ``curl -D`` dump (lower-case names)."""
    text = raw.decode("latin-1")
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    if not blocks:
        return {}
    out: Dict[str, str] = {}
    for line in blocks[-1].splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out


def _parse_raw_http(raw: bytes):  # type: ignore[no-untyped-def]
    """(status, headers, body) from a raw HTTP/1.1 response (0, {}, b'' if none)."""
    if not raw.startswith(b"HTTP/"):
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        status = 0
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


_CONNECTED_RE = re.compile(r"SSL connection using (TLSv[0-9.]+)")


def _curl_response(status: int, stderr: str, hdrs: Dict[str, str], body: bytes, rc: int, args: List[str]) -> Response:
    """Interpret curl's verbose log: TLS version, server cert, and certificate requests."""
    m = _CONNECTED_RE.search(stderr)
    connected_at = m.start() if m else len(stderr)
    cert_req = [mm.start() for mm in re.finditer(r"TLS handshake, (?:Request CERT|CERT request) \(13\)", stderr)]
    subj = re.search(r"^\*\s+subject: (.*)$", stderr, re.M)
    issuer = re.search(r"^\*\s+issuer: (.*)$", stderr, re.M)
    http_version = None
    hv = re.search(r"^< HTTP/([0-9.]+) ", stderr, re.M)
    if hv:
        http_version = hv.group(1)
    is_tls = "://" in args[-1] and args[-1].startswith("https")
    return Response(
        status=status,
        stderr=stderr,
        client_verify=hdrs.get("x-test-client-verify"),
        headers=hdrs,
        body=body,
        exit_code=rc,
        tls_version=m.group(1) if m else None,
        http_version=http_version,
        server_subject=subj.group(1).strip() if subj else None,
        server_issuer=issuer.group(1).strip() if issuer else None,
        cert_request_initial=any(p < connected_at for p in cert_req) if is_tls else False,
        cert_request_post=any(p > connected_at for p in cert_req) if is_tls else False,
        hello_request="Hello request (0)" in stderr,
        args=args,
    )
