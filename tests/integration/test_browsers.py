"""Real browsers against the CN: the MetacatUI CORS call, before and after the change, TLS 1.2 and 1.3.

What MetacatUI does, done by Debian's headless Chromium and Firefox ESR: a
page from another origin (``http://127.0.0.1:<port>``) makes a credentialed
cross-origin XMLHttpRequest with a bearer token to the harness CN's
``https://cn.dataone.test:<port>/cn/v2/accounts/<subject>``; the token header
makes the browser send a preflight ``OPTIONS`` first; the page reports the
outcome to its own origin. Each cell of {Chromium, Firefox ESR} x {TLS 1.2,
TLS 1.3} x {``webkit-only``, the policy applied, ``plain-optional``} is
observed from both ends: the browser (the XHR's outcome; its own log of a
certificate request: Chromium's net log, Firefox's PSM log) and the server
(a request log with protocol, SNI and ``SSL_CLIENT_VERIFY``; the error log's
AH codes per connection; what reached the backend).

Asserted: the policy's promise (after apply, neither browser is asked on
either TLS version and the CORS call succeeds), the documented incident
(webkit-only, TLS 1.3: Firefox is not WebKit, offers no post-handshake
authentication, Apache answers 403 with AH10158 and the call fails), and
that the browser rows of the client catalogue predict what the real
browsers do. Everything observed is also rendered as the matrix of
docs/browsers.md (``BROWSER_MATRIX_OUT=FILE`` writes it).

TLS 1.2 is pinned on the server: the policy's own opt-in
(``SSLProtocol -all +TLSv1.2`` in the snippet) after apply, the same line
in the vhost before.
"""

import os
import subprocess
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote

import pytest

from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify.records import dataclass, field
from harness import ApacheInstance, Pki
from harness import browsers as B
from harness.changes import patch_applied, set_tls12_only
from harness.instance import REPO_ROOT, SAFE_PATH
from harness.serverview import RequestLine, enable_request_log, request_lines, LOG_NAME
from harness.webapp import ACCOUNT_MARKER, SUBJECT, ApiBackend, OriginServer, route_api_to

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IE11_UA = C.get_client("browser-ie11-win7").user_agent
PHA_PREF = "security.tls.enable_post_handshake_auth"
SERVERS = ("webkit-only", "applied", "plain-optional")
TLS = ("1.2", "1.3")
#: Seconds one browser run may take (start, page, preflight, GET, report).
RUN_TIMEOUT = 45


# ---------------------------------------------------------------- observations


@dataclass
class Cell:
    """One browser run against one server configuration, seen from both ends."""

    browser: str
    server: str
    tls: str
    variant: str  # "" = the browser as shipped; else what was changed (User-Agent, a pref)
    report: Optional[Dict[str, Any]]
    browser_asked: Optional[bool]
    lines: List[RequestLine] = field(default_factory=list)
    backend: List[Dict[str, Optional[str]]] = field(default_factory=list)
    run: Optional[B.BrowserRun] = None

    @property
    def cors_ok(self) -> bool:
        r = self.report or {}
        return r.get("status") == 200 and ACCOUNT_MARKER in str(r.get("body", ""))

    @property
    def server_asked(self) -> str:
        how = sorted({ln.asked for ln in self.lines if ln.asked})
        if self.server == "plain-optional":
            how = ["handshake (vhost-level optional)"] + how
        return " / ".join(how) or "no"

    def ah(self) -> List[str]:
        out: List[str] = []
        for ln in self.lines:
            out += [c for c in ln.ah if c not in out]
        return out

    def describe(self) -> str:
        return "%s %s TLS %s %s\nreport=%s\nbrowser_asked=%s log=%s\nserver=%s\nbackend=%s\nstderr=%s" % (
            self.browser, self.server, self.tls, self.variant, self.report, self.browser_asked,
            self.run.log_excerpt if self.run else None,
            "\n  ".join(str(ln) for ln in self.lines), self.backend,
            (self.run.stderr_tail[-1500:] if self.run else ""),
        )


def _ensure_browsers() -> None:
    """Install missing browsers with scripts/apt-ensure (as `make test` does); fail, never skip."""
    missing = B.missing_tools()
    if missing and os.geteuid() == 0:
        subprocess.run(["sh", str(REPO_ROOT / "scripts" / "apt-ensure")] + missing, env=dict(os.environ, PATH=SAFE_PATH),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800, check=False)
        missing = B.missing_tools()
    if missing:
        pytest.fail("browser tests need Debian's %s: `make test` installs them (`sh scripts/apt-ensure %s`)"
                    % (", ".join(missing), " ".join(missing)), pytrace=False)


def _pin_tls12(inst: ApacheInstance, server: str) -> None:
    if server == "applied":
        set_tls12_only(inst)  # the policy's documented opt-in
    else:
        data = inst.vhost_bytes()
        assert data.count(b"\tSSLEngine on\n") == 1
        inst.write_vhost(data.replace(b"\tSSLEngine on\n", b"\tSSLEngine on\n\tSSLProtocol -all +TLSv1.2\n"))


class Lab:
    """The CN instances (built on first use), the backend, and every cell observed so far."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> None:
        self.tmp = tmp_path_factory
        self.pki = pki
        self.backend = ApiBackend()
        self.servers: Dict[Tuple[str, str], ApacheInstance] = {}
        self.cells: Dict[Tuple[str, str, str, str], Cell] = {}
        self.versions = {b: B.browser_version(b) for b in B.BROWSERS}
        self.seconds = 0.0

    def server(self, server: str, tls: str) -> ApacheInstance:
        key = (server, tls)
        if key not in self.servers:
            variant = "webkit-only" if server == "applied" else server
            inst = ApacheInstance(self.tmp.mktemp("browsers-%s-%s" % (server, tls)), variant, pki=self.pki,
                                  loglevel="warn ssl:debug")
            self.servers[key] = inst
            route_api_to(inst, self.backend)
            enable_request_log(inst)
            if server == "applied":
                patch_applied(inst)
            if tls == "1.2":
                _pin_tls12(inst, server)
            assert inst.configtest().ok, inst.configtest().output
            inst.start()
        return self.servers[key]

    def observe(self, browser: str, server: str, tls: str, variant: str = "",
                user_agent: Optional[str] = None, prefs: Optional[Dict[str, object]] = None,
                trust_ca: bool = True, cert: bool = False, xhr_timeout_ms: int = 15000) -> Cell:
        """Run the page once in ``browser`` against ``server``/``tls`` (cached per cell)."""
        key = (browser, server, tls, variant)
        if key in self.cells:
            return self.cells[key]
        inst = self.server(server, tls)
        target = inst.url("/cn/v2/accounts/" + quote(SUBJECT, safe=""))
        log_path = inst.log_dir / LOG_NAME
        log_from = log_path.stat().st_size if log_path.exists() else 0
        err_mark = inst.error_log_mark()
        self.backend.clear()
        t0 = time.monotonic()
        with OriginServer(target, timeout_ms=xhr_timeout_ms) as origin:
            run = B.run_browser(browser, origin.url, inst.server_name, self.pki.ca_cert, origin.wait_report,
                                timeout=RUN_TIMEOUT, prefs=prefs, user_agent=user_agent, trust_ca=trust_ca,
                                client_cert=(self.pki.client_cert, self.pki.client_key) if cert else None)
        self.seconds += time.monotonic() - t0
        errors = inst.error_log_since(err_mark, settle=0.3)  # children log a closed connection's request late
        with open(str(log_path), "rb") as f:
            f.seek(log_from)
            text = f.read().decode("utf-8", "replace")
        cell = Cell(browser, server, tls, variant, run.report, run.asked, request_lines(text, errors),
                    self.backend.seen(), run)
        self.cells[key] = cell
        return cell

    def close(self) -> None:
        for inst in self.servers.values():
            inst.cleanup()
        self.backend.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Lab]:
    _ensure_browsers()
    made = Lab(tmp_path_factory, pki)
    try:
        yield made
    finally:
        made.close()
        out = os.environ.get("BROWSER_MATRIX_OUT")
        if out:
            with open(out, "w") as f:
                f.write(render_matrix(made))
    assert not any(i.processes() for i in made.servers.values())


# ---------------------------------------------------------------- what every cell must show


def _assert_the_call_was_made(cell: Cell, inst: ApacheInstance) -> None:
    """The page made the MetacatUI call: a preflight OPTIONS (no credentials, no token) first, from our origin, SNI = the CN."""
    assert cell.report is not None, "the page never reported\n" + cell.describe()
    assert cell.lines, "the CN logged no request\n" + cell.describe()
    first = cell.lines[0]
    assert first.method == "OPTIONS", cell.describe()
    assert all(ln.path.startswith("/cn/v2/accounts/") for ln in cell.lines), cell.describe()
    assert all(ln.origin.startswith("http://127.0.0.1:") for ln in cell.lines), cell.describe()
    for ln in cell.lines:
        if ln.protocol != "-":  # a connection whose renegotiation failed logs no TLS variables
            assert ln.sni == inst.server_name and ln.protocol == "TLSv" + cell.tls, cell.describe()


def _assert_cors_succeeded(cell: Cell) -> None:
    assert cell.cors_ok, cell.describe()
    methods = [r["method"] for r in cell.backend]
    assert methods == ["OPTIONS", "GET"], cell.describe()
    assert cell.backend[0]["authorization"] is None, "a preflight carries no credentials\n" + cell.describe()
    assert cell.backend[1]["authorization"].startswith("Bearer "), cell.describe()


# ---------------------------------------------------------------- the policy's promise


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("browser", B.BROWSERS)
def test_applied_browsers_never_asked_and_cors_succeeds(lab: Lab, browser: str, tls: str) -> None:
    cell = lab.observe(browser, "applied", tls)
    _assert_the_call_was_made(cell, lab.server("applied", tls))
    assert cell.browser_asked is False, cell.describe()
    assert cell.server_asked == "no" and cell.ah() == [], cell.describe()
    assert [(ln.method, ln.status, ln.verify) for ln in cell.lines] == [("OPTIONS", 200, "NONE"), ("GET", 200, "NONE")], \
        cell.describe()
    _assert_cors_succeeded(cell)


# ---------------------------------------------------------------- the documented incident and the old block


def test_webkit_only_tls13_firefox_gets_403_and_the_cors_call_fails(lab: Lab) -> None:
    """Firefox's User-Agent has no "WebKit": asked by PHA, which it does not offer -> 403 (AH10158) to the preflight."""
    cell = lab.observe("firefox-esr", "webkit-only", "1.3")
    _assert_the_call_was_made(cell, lab.server("webkit-only", "1.3"))
    assert "WebKit" not in cell.report["ua"], cell.describe()
    assert [(ln.method, ln.status) for ln in cell.lines] == [("OPTIONS", 403)], cell.describe()
    assert "AH10158" in cell.lines[0].ah, cell.describe()
    assert cell.browser_asked is False, "no PHA offered: the CertificateRequest is never sent\n" + cell.describe()
    assert cell.report["status"] == 0 and cell.report["events"] == ["error"], cell.describe()
    assert cell.backend == [], cell.describe()


def test_webkit_only_tls12_firefox_is_asked_by_renegotiation(lab: Lab) -> None:
    """The same Firefox under TLS 1.2: asked (renegotiation, on the preflight and on the GET); it has no certificate."""
    cell = lab.observe("firefox-esr", "webkit-only", "1.2")
    _assert_the_call_was_made(cell, lab.server("webkit-only", "1.2"))
    assert cell.browser_asked is True, cell.describe()
    assert all(ln.asked == "renegotiation" for ln in cell.lines), cell.describe()
    # Recorded in docs/browsers.md: NSS completes the renegotiation without a certificate, the call succeeds.
    firefox = C.get_client("browser-firefox")
    assert firefox.renegotiation == (cell.cors_ok and all(ln.status == 200 for ln in cell.lines)), cell.describe()


@pytest.mark.parametrize("tls", TLS)
def test_webkit_only_chromium_is_not_asked(lab: Lab, tls: str) -> None:
    """Chromium's User-Agent (HeadlessChrome, AppleWebKit/537.36) matches /webkit/i: never asked."""
    cell = lab.observe("chromium", "webkit-only", tls)
    _assert_the_call_was_made(cell, lab.server("webkit-only", tls))
    assert "AppleWebKit" in cell.report["ua"], cell.describe()
    assert cell.browser_asked is False and cell.server_asked == "no", cell.describe()
    _assert_cors_succeeded(cell)


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("browser", B.BROWSERS)
def test_plain_optional_asks_browsers_in_the_handshake(lab: Lab, browser: str, tls: str) -> None:
    """Vhost-level optional: every browser sees a CertificateRequest in the handshake (no renegotiation, no PHA)."""
    cell = lab.observe(browser, "plain-optional", tls)
    _assert_the_call_was_made(cell, lab.server("plain-optional", tls))
    assert cell.browser_asked is True, cell.describe()
    assert not any(ln.asked for ln in cell.lines), cell.describe()


# ---------------------------------------------------------------- the catalogue's browser rows against the real TLS stacks


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("browser,client_id", [("chromium", "browser-chrome"), ("firefox-esr", "browser-firefox")])
def test_catalogue_row_predicts_the_real_browser_when_asked(lab: Lab, browser: str, client_id: str, tls: str) -> None:
    """Make each browser be asked (webkit-only; Chromium with IE11's User-Agent) and compare with its row in clients.py.

    TLS 1.3: asked only by PHA; a row with ``pha=False`` predicts 403 (AH10158)
    and a failed call. TLS 1.2: a row with ``renegotiation=True`` predicts that
    the renegotiation completes (without a certificate) and the call succeeds.
    """
    row = C.get_client(client_id)
    if browser == "chromium":
        cell = lab.observe(browser, "webkit-only", tls, variant="User-Agent of IE11", user_agent=IE11_UA)
    else:
        cell = lab.observe(browser, "webkit-only", tls)  # Firefox's own User-Agent has no "WebKit"
    _assert_the_call_was_made(cell, lab.server("webkit-only", tls))
    assert "webkit" not in cell.report["ua"].lower(), cell.describe()
    if tls == "1.3":
        assert not row.pha, "%s offers PHA according to clients.py" % client_id
        assert [(ln.method, ln.status) for ln in cell.lines] == [("OPTIONS", 403)], cell.describe()
        assert "AH10158" in cell.lines[0].ah and not cell.cors_ok, cell.describe()
    else:
        assert row.renegotiation, "%s refuses renegotiation according to clients.py" % client_id
        assert cell.browser_asked is True and cell.cors_ok, cell.describe()
        assert any(ln.asked == "renegotiation" and ln.status == 200 for ln in cell.lines), cell.describe()


def test_firefox_with_its_pha_pref_is_asked_post_handshake(lab: Lab) -> None:
    """clients.py: NSS offers PHA only with security.tls.enable_post_handshake_auth; then TLS 1.3 asks and succeeds."""
    cell = lab.observe("firefox-esr", "webkit-only", "1.3", variant=PHA_PREF + "=true", prefs={PHA_PREF: True})
    _assert_the_call_was_made(cell, lab.server("webkit-only", "1.3"))
    assert cell.browser_asked is True, cell.describe()
    assert all(ln.asked == "post-handshake" and ln.status == 200 for ln in cell.lines), cell.describe()
    _assert_cors_succeeded(cell)


@pytest.mark.parametrize("browser", B.BROWSERS)
def test_the_harness_ca_is_trusted_only_in_the_run_profile(lab: Lab, browser: str) -> None:
    """Negative control: without the CA in the run's own NSS database the call fails before any request.

    So the trust comes from the temp profile and nowhere else (not the system store).
    """
    cell = lab.observe(browser, "applied", "1.3", variant="CA not trusted", trust_ca=False)
    assert cell.report is not None, cell.describe()
    assert cell.report["status"] == 0 and not cell.cors_ok, cell.describe()
    assert cell.lines == [] and cell.backend == [], cell.describe()


# ---------------------------------------------------------------- a user who holds a client certificate

#: Cells where the browser may wait for the user to pick a certificate: a short XHR timeout bounds them.
SHORT_XHR_MS = 6000


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("browser", B.BROWSERS)
def test_applied_browser_holding_a_certificate_is_never_asked(lab: Lab, browser: str, tls: str) -> None:
    """The promise also for a browser with a client certificate in its store: not asked, no chooser, the call succeeds."""
    cell = lab.observe(browser, "applied", tls, variant="holds a client certificate", cert=True,
                       xhr_timeout_ms=SHORT_XHR_MS)
    _assert_the_call_was_made(cell, lab.server("applied", tls))
    assert cell.browser_asked is False and cell.server_asked == "no", cell.describe()
    assert [(ln.status, ln.verify) for ln in cell.lines] == [(200, "NONE"), (200, "NONE")], cell.describe()
    _assert_cors_succeeded(cell)


@pytest.mark.parametrize("browser,server,tls,prefs", [
    ("firefox-esr", "webkit-only", "1.2", None),
    ("firefox-esr", "webkit-only", "1.2", {"security.default_personal_cert": "Select Automatically"}),
    ("chromium", "plain-optional", "1.3", None),
])
def test_asked_browser_holding_a_certificate(lab: Lab, browser: str, server: str, tls: str,
                                             prefs: Optional[Dict[str, object]]) -> None:
    """Where the old blocks ask a browser that holds a certificate, it is asked; what follows is recorded.

    By default both browsers then want the user to pick a certificate (a
    dialog; headless, nobody answers): see docs/browsers.md.
    """
    variant = "holds a client certificate" + (", " + ", ".join("%s=%s" % kv for kv in prefs.items()) if prefs else "")
    cell = lab.observe(browser, server, tls, variant=variant, prefs=prefs, cert=True, xhr_timeout_ms=SHORT_XHR_MS)
    assert cell.report is not None, cell.describe()
    assert cell.browser_asked is True, cell.describe()


# ---------------------------------------------------------------- the observed matrix


def _cell_text(cell: Cell) -> Tuple[str, str]:
    if cell.report is None:
        browser = "no report"
    else:
        status = cell.report.get("status")
        browser = ("CORS ok (%s)" % status) if cell.cors_ok else ("**CORS failed** (status %s, %s)"
                                                                  % (status, "/".join(cell.report.get("events", []))))
    browser += "; asked: %s" % {True: "yes", False: "no", None: "?"}[cell.browser_asked]
    reqs = "; ".join("%s %s %s%s" % (ln.method, ln.status, ln.verify,
                                      (" " + "/".join(ln.ah)) if ln.ah else "") for ln in cell.lines)
    server = "asked: %s; %s" % (cell.server_asked, reqs or "no request")
    return browser, server


def render_matrix(lab: Lab) -> str:
    """Markdown table of every observed cell (the browser's view beside the server's)."""
    out = ["Observed with %s and %s (headless), Apache 2.4 (Debian 12); browser runs took %.0f s in all."
           % (lab.versions["chromium"], lab.versions["firefox-esr"], lab.seconds), "",
           "| browser | server block | TLS | browser: XHR outcome; saw a certificate request | "
           "server: asked; requests (method status SSL_CLIENT_VERIFY AH codes) |",
           "|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate(SERVERS)}
    for key in sorted(lab.cells, key=lambda k: (k[0], order[k[1]], k[3], k[2])):
        cell = lab.cells[key]
        b, s = _cell_text(cell)
        name = lab.versions[cell.browser] + (" (%s)" % cell.variant if cell.variant else "")
        out.append("| %s | %s | %s | %s | %s |" % (name, cell.server, cell.tls, b, s))
    return "\n".join(out) + "\n"


def test_every_cell_observed(lab: Lab) -> None:
    """The full matrix: both browsers x both TLS versions x the three blocks, each with a report and server lines."""
    for browser in B.BROWSERS:
        for server in SERVERS:
            for tls in TLS:
                cell = lab.observe(browser, server, tls)
                assert cell.report is not None and cell.lines, cell.describe()
    print("\n" + render_matrix(lab))


@pytest.mark.parametrize("browser,client_id,name", [("chromium", "browser-chrome", "Chromium"),
                                                    ("firefox-esr", "browser-firefox", "Firefox ESR")])
def test_catalogue_names_the_browser_version_it_was_checked_against(lab: Lab, browser: str, client_id: str,
                                                                    name: str) -> None:
    """clients.py says "checked against real <browser> N": N must be the major version these tests just ran."""
    major = lab.versions[browser].split()[-1].split(".")[0]
    claim = C.get_client(client_id).validated
    assert claim.startswith("%s %s " % (name, major)), (
        "clients.py %s says it was checked against %r but the tests ran %s: rerun `make browsers`, "
        "then update the row's validated= text (and README, docs/browsers.md)" % (client_id, claim, lab.versions[browser]))
