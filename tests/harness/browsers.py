"""Debian's Chromium and Firefox ESR, headless, each in a throwaway profile that trusts the harness CA.

Why real browsers: what a browser does when a server asks it for a client
certificate in the middle of a connection (a TLS 1.2 renegotiation, a TLS
1.3 post-handshake request) is decided by its TLS stack (BoringSSL, NSS)
and its client-certificate code, which no profile can replay.

Isolation: each run gets a new temp directory holding the browser profile
and an NSS database where the harness CA is trusted (``certutil``); nothing
is written to the system trust store or to root's home. Chromium on Linux
reads the user NSS database at ``$HOME/.pki/nssdb``, so ``HOME`` points into
the temp directory; Firefox reads ``cert9.db`` from its profile. The CN's
name resolves to 127.0.0.1 inside the browser only (Chromium
``--host-resolver-rules``, Firefox ``network.dns.forceResolve``), so the
browser sends the CN's name in SNI and in ``Host``. Outside connections
are switched off (updates, telemetry, captive portal, safe browsing, DoH).

Each run is bounded by a timeout; the browser's whole process group is
killed at the end (it was started in its own session).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from dataone_cn_sslverify.records import dataclass, field

__all__ = ["BROWSERS", "BrowserRun", "browser_version", "run_browser", "missing_tools"]

CHROMIUM = "/usr/bin/chromium"
FIREFOX = "/usr/bin/firefox-esr"
CERTUTIL = "/usr/bin/certutil"
PK12UTIL = "/usr/bin/pk12util"
OPENSSL = "/usr/bin/openssl"
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

#: Browser ids, as the tests and the matrix name them.
BROWSERS = ("chromium", "firefox-esr")

#: Debian package of each tool, for the message when one is missing.
PACKAGES = {CHROMIUM: "chromium", FIREFOX: "firefox-esr", CERTUTIL: "libnss3-tools", PK12UTIL: "libnss3-tools"}


@dataclass
class BrowserRun:
    """One browser process that loaded one page: what it reported and what it logged."""

    browser: str
    report: Optional[Dict[str, object]]
    #: Did the browser's own log show a certificate request from the server? None: it cannot tell.
    asked: Optional[bool]
    log_excerpt: List[str] = field(default_factory=list)
    returncode: Optional[int] = None
    stderr_tail: str = ""


def missing_tools() -> List[str]:
    """Debian packages the browser tests need and that are not installed."""
    return sorted({PACKAGES[t] for t in PACKAGES if not os.access(t, os.X_OK)})


def browser_version(browser: str) -> str:
    """``Chromium 156.0.8078.114`` / ``Mozilla Firefox 153.8.0esr`` (the first line of ``--version``)."""
    exe = CHROMIUM if browser == "chromium" else FIREFOX
    home = tempfile.mkdtemp(prefix="browser-version-")
    try:
        out = subprocess.run([exe, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=60, check=False,
                             env={"PATH": SAFE_PATH, "HOME": home}).stdout.decode("utf-8", "replace")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    m = re.search(r"(Chromium [0-9.]+|Mozilla Firefox [0-9.]+(?:esr)?)", out)
    return m.group(1) if m else out.strip()


def _tool(*argv: str) -> None:
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, check=False, env={"PATH": SAFE_PATH})
    if proc.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(argv), proc.stderr.decode("utf-8", "replace")))


def _certutil(*args: str) -> None:
    _tool(CERTUTIL, *args)


def _add_client_cert(nssdb: Path, cert: Path, key: Path) -> None:
    """Import a client certificate and its key into ``nssdb`` (PKCS#12 made with openssl, empty password)."""
    p12 = nssdb / "client.p12"
    _tool(OPENSSL, "pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-name", "harness client",
          "-out", str(p12), "-passout", "pass:")
    _tool(PK12UTIL, "-i", str(p12), "-d", "sql:%s" % nssdb, "-W", "", "-K", "")
    p12.unlink()


def _new_nssdb(nssdb: Path) -> None:
    """A new, empty NSS database in ``nssdb`` (no password)."""
    nssdb.mkdir(parents=True, exist_ok=True)
    _certutil("-N", "-d", "sql:%s" % nssdb, "--empty-password")


def _stop(proc: "subprocess.Popen[bytes]", grace: float = 5) -> None:
    """SIGTERM the browser (it then closes its logs), then SIGKILL its whole process group.

    The browser runs in its own session, so the group is exactly its processes.
    """
    try:
        proc.terminate()
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < end:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


# ---------------------------------------------------------------- Chromium


def _chromium_argv(work: Path, url: str, host: str) -> List[str]:
    return [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--disable-features=Translate,OptimizationHints,MediaRouter",
        "--metrics-recording-only", "--disable-breakpad",
        "--user-data-dir=%s" % (work / "profile"),
        # Only the CN's name is mapped; every other name fails to resolve (no outside connections).
        "--host-resolver-rules=MAP %s 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" % host,
        "--log-net-log=%s" % (work / "netlog.json"), "--net-log-capture-mode=Default",
        url,
    ]


def _chromium_asked(work: Path) -> Tuple[Optional[bool], List[str]]:
    """Whether the net log records SSL_CLIENT_CERT_REQUESTED (None when there is no net log)."""
    try:
        text = (work / "netlog.json").read_text(errors="replace")
    except OSError:
        return None, []
    names = sorted(set(re.findall(r'"(SSL_CLIENT_CERT_[A-Z_]+)"', text)))
    # The constants table names every event type: count only events that happened.
    m = re.search(r'"SSL_CLIENT_CERT_REQUESTED"\s*:\s*(\d+)', text)
    if not m:
        return False, names
    code = m.group(1)
    happened = re.search(r'"type"\s*:\s*%s\b' % code, text) is not None
    return happened, ["SSL_CLIENT_CERT_REQUESTED event type %s %s" % (code, "seen" if happened else "not seen")]


# ---------------------------------------------------------------- Firefox

_FIREFOX_PREFS = {
    # name resolution and no outside connections
    "network.dns.forceResolve": "127.0.0.1",
    "network.trr.mode": 5,
    "network.proxy.type": 0,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.ping-centre.telemetry": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "services.settings.server": "http://127.0.0.1:9/",
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "geo.enabled": False,
    "dom.push.enabled": False,
    "browser.tabs.remote.autostart": True,
}


def _user_js(prefs: Dict[str, object]) -> str:
    lines = []
    for k, v in sorted(prefs.items()):
        if isinstance(v, bool):
            val = "true" if v else "false"
        elif isinstance(v, int):
            val = str(v)
        else:
            val = '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')
        lines.append('user_pref("%s", %s);' % (k, val))
    return "\n".join(lines) + "\n"


def _firefox_argv(work: Path, url: str) -> List[str]:
    return [FIREFOX, "-headless", "-no-remote", "-profile", str(work / "profile"), url]


def _firefox_asked(work: Path) -> Tuple[Optional[bool], List[str]]:
    """Whether the PSM log shows NSS's client-authentication callback.

    NSS calls it when a CertificateRequest arrives (in the handshake, in a
    renegotiation, or post-handshake).
    """
    lines: List[str] = []
    found = False
    for p in sorted(work.glob("moz.log*")):
        for line in p.read_text(errors="replace").splitlines():
            if "SSLGetClientAuthDataHook" in line or "selecting client auth certificate" in line:
                found = True
                if len(lines) < 6:
                    lines.append(line.strip()[:200])
    if not list(work.glob("moz.log*")):
        return None, []
    return found, lines


# ---------------------------------------------------------------- driver


def run_browser(
    browser: str,
    url: str,
    host: str,
    ca_cert: Path,
    wait_report: Callable[[float], Optional[Dict[str, object]]],
    timeout: float = 45,
    prefs: Optional[Dict[str, object]] = None,
    user_agent: Optional[str] = None,
    trust_ca: bool = True,
    client_cert: Optional[Tuple[Path, Path]] = None,
) -> BrowserRun:
    """Load ``url`` in a fresh headless ``browser`` and wait (at most ``timeout`` s) for the page's report.

    ``host`` is the CN's name (resolved to 127.0.0.1 by the browser);
    ``wait_report(seconds)`` returns the page's report or None. ``prefs``
    adds Firefox preferences (ignored for Chromium). ``user_agent`` replaces
    the browser's own (its TLS stack stays the same). ``trust_ca=False``
    leaves the harness CA out of the profile's NSS database (a negative
    control). ``client_cert`` (certificate, key) puts a client certificate
    in that database, as for a user who holds one.
    """
    if browser not in BROWSERS:
        raise ValueError("browser must be one of %s" % (BROWSERS,))
    work = Path(tempfile.mkdtemp(prefix="browser-%s-" % browser))
    env = {"PATH": SAFE_PATH, "HOME": str(work / "home"), "LANG": "C.UTF-8", "TMPDIR": str(work / "tmp")}
    (work / "home").mkdir()
    (work / "tmp").mkdir()
    (work / "profile").mkdir()
    try:
        if browser == "chromium":
            nssdb = work / "home" / ".pki" / "nssdb"
            argv = _chromium_argv(work, url, host)
            if user_agent is not None:
                argv.insert(-1, "--user-agent=%s" % user_agent)
        else:
            nssdb = work / "profile"
            all_prefs = dict(_FIREFOX_PREFS)
            all_prefs.update(prefs or {})
            if user_agent is not None:
                all_prefs["general.useragent.override"] = user_agent
            (work / "profile" / "user.js").write_text(_user_js(all_prefs))
            env.update(MOZ_LOG="timestamp,pipnss:5", MOZ_LOG_FILE=str(work / "moz.log"),
                       MOZ_CRASHREPORTER_DISABLE="1", MOZ_DISABLE_AUTO_SAFE_MODE="1")
            argv = _firefox_argv(work, url)
        _new_nssdb(nssdb)
        if trust_ca:
            _certutil("-A", "-d", "sql:%s" % nssdb, "-n", "dataone-cn-sslverify harness CA", "-t", "C,,",
                      "-i", str(ca_cert))
        if client_cert is not None:
            _add_client_cert(nssdb, client_cert[0], client_cert[1])
        stderr_path = work / "stderr"
        with open(str(stderr_path), "wb") as err:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    start_new_session=True)
            try:
                report = wait_report(timeout)
            finally:
                rc = proc.poll()
                _stop(proc)
        if browser == "chromium":
            asked, excerpt = _chromium_asked(work)
        else:
            asked, excerpt = _firefox_asked(work)
        tail = stderr_path.read_text(errors="replace")[-3000:]
        return BrowserRun(browser, report, asked, excerpt, rc, tail)
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
