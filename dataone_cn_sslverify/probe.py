"""Live check of a running Apache vhost: which clients are asked for a certificate.

The change this package makes is only right if, on the live server, browsers
are never asked for a client certificate on ``/cn`` while API clients still
are. Reading the configuration cannot prove that: a per-directory
``SSLVerifyClient`` acts *after* the request headers are read, through a TLS
1.2 renegotiation or a TLS 1.3 post-handshake authentication (PHA), and
``<If>``/``<Else>`` merge order decides which block wins (see
``cn-facts.md``). So this module connects to the server like a client would,
sends a real HTTP/1.1 request with a chosen User-Agent, and watches the TLS
handshake messages for a ``CertificateRequest``:

* before the handshake completed -> asked in the initial ``handshake``;
* after a server ``HelloRequest`` (TLS 1.2) -> asked in a ``renegotiation``;
* after the handshake under TLS 1.3 -> asked ``post-handshake`` (PHA).

Layout: a pure core (profiles, the classifier that turns a list of observed
handshake messages into an answer, HTTP and ``openssl s_client`` output
parsing, the apply-gate `verdict`, JSON and table formatting) and a thin
effect edge (`probe`), which has two interchangeable backends that produce
the same list of `Event` values for the same classifier:

``python`` (default)
    Python's ``ssl`` module with ``SSLContext._msg_callback``, CPython's
    private debug hook (3.8+) that reports every decrypted handshake message.
    In-process, no subprocess, exact per-message information, and the client
    under test *is* Python's ``ssl`` -- the stack ``requests``/``urllib3``
    clients use.
``openssl``
    ``openssl s_client -msg`` with the messages written to a separate file.
    Used automatically when the private hook is missing (another Python
    implementation, or a future CPython that drops it).

What the probe cannot see: whether the server *verified* a certificate is
only inferred (see `ProbeResult.verified`) unless the server echoes
``SSL_CLIENT_VERIFY`` in a response header.

The client matrix (`CLIENTS`, `matrix_profiles`, `probe_matrix`): each real
client family (browsers, curl, python-requests, R httr, Java HttpClient, Go,
the DataONE Java and Python clients) is described by what its TLS stack does
-- the User-Agent it sends, whether it offers TLS 1.3 post-handshake auth,
whether it accepts a server-initiated TLS 1.2 renegotiation, the highest TLS
version it speaks -- and the probe plays that behaviour with Python's
``ssl`` (or ``openssl s_client``), with and without a client certificate,
over each TLS version the server offers. Every row is therefore a
*behavioural* profile; `Client.behaviour` says whether the behaviour was
checked against the real binary (tests/integration/test_matrix.py runs real
curl, requests, Java 17 HttpClient and Go 1.19 clients against the harness)
or taken from documentation. `gate_apply` turns a before/after pair of
matrices into the apply gate: no browser asked, and no API client that
worked before fails after.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "BROWSER",
    "API",
    "HOW_HANDSHAKE",
    "HOW_RENEGOTIATION",
    "HOW_POST_HANDSHAKE",
    "BACKENDS",
    "Profile",
    "Event",
    "Observation",
    "ProbeResult",
    "Verdict",
    "DEFAULT_PROFILES",
    "get_profile",
    "classify",
    "build_request",
    "parse_http_response",
    "parse_msg_line",
    "parse_s_client",
    "s_client_argv",
    "default_backend",
    "probe",
    "probe_all",
    "verdict",
    "results_to_json",
    "format_table",
    # the client matrix (issue 5)
    "HOW_RENEGOTIATION_REFUSED",
    "Client",
    "CLIENTS",
    "get_client",
    "row_name",
    "matrix_profiles",
    "Handshake",
    "handshake",
    "server_tls_versions",
    "skipped_result",
    "probe_matrix",
    "diagnose",
    "results_from_json",
    "gate_apply",
    "format_legend",
]

BROWSER = "browser"
API = "api"
KINDS = (BROWSER, API)
TLS_VERSIONS = ("1.2", "1.3")

HOW_HANDSHAKE = "handshake"
HOW_RENEGOTIATION = "renegotiation"
HOW_POST_HANDSHAKE = "post-handshake"
# The server started a TLS 1.2 renegotiation (HelloRequest) to ask for a
# certificate and the client refused it (Apache: AH02261). The request never
# got an answer: this is IE11's "XMLHttpRequest: Network Error 0x4c7".
HOW_RENEGOTIATION_REFUSED = "renegotiation-refused"

BACKENDS = ("python", "openssl")

# A Certificate handshake message carrying no certificate is 7 bytes (TLS 1.2)
# or 8 bytes plus the request context (TLS 1.3, context <= 255 bytes); any
# real X.509 certificate makes it far longer than this.
_EMPTY_CERTIFICATE_MAX = 4 + 1 + 255 + 3

# Response headers through which a test or production vhost may echo
# mod_ssl's SSL_CLIENT_VERIFY (e.g. ``Header set X-SSL-Client-Verify
# "%{SSL_CLIENT_VERIFY}s"``). Compared case-insensitively.
VERIFY_HEADERS = ("x-ssl-client-verify", "x-client-verify", "ssl-client-verify")


# --------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class Profile:
    """A client to imitate.

    ``cert``: present the client certificate if the server asks and one is
    configured. ``tls``: pin the protocol version ("1.2" or "1.3"), or None to
    negotiate the highest both sides support. ``pha``: offer the TLS 1.3
    ``post_handshake_auth`` extension.
    """

    name: str
    kind: str
    user_agent: str
    cert: bool = False
    tls: Optional[str] = None
    pha: bool = False
    note: str = ""
    #: Accept a server-initiated TLS 1.2 renegotiation (False: answer it with
    #: a no_renegotiation alert, as IE11 on Windows 7 and Go's default do).
    renegotiation: bool = True
    #: The client family (`Client.id`) this row belongs to; "" for a lone profile.
    client: str = ""
    #: Extra request headers (name, value), e.g. a CORS Origin.
    headers: Tuple[Tuple[str, str], ...] = ()
    #: True when the row deviates from the real client on purpose to make a
    #: server's certificate request visible (a browser offering PHA).
    instrument: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"profile {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.tls is not None and self.tls not in TLS_VERSIONS:
            raise ValueError(f"profile {self.name!r}: tls must be one of {TLS_VERSIONS} or None, not {self.tls!r}")
        if "\r" in self.user_agent or "\n" in self.user_agent:
            raise ValueError(f"profile {self.name!r}: user_agent must not contain CR or LF")
        for k, v in self.headers:
            if not re.fullmatch(r"[A-Za-z0-9-]+", k) or "\r" in v or "\n" in v:
                raise ValueError(f"profile {self.name!r}: invalid header {k!r}: {v!r}")

    @property
    def family(self) -> str:
        """The client family: `client`, or the profile name for a lone profile."""
        return self.client or self.name


# The legacy quick set (DEFAULT_PROFILES, unpinned TLS; the transaction's gate
# used it before the matrix). Its browser profiles are instruments, not
# imitations of a TLS stack: they send
# the browser's User-Agent, accept a TLS 1.2 renegotiation and offer TLS 1.3
# post-handshake auth, so that *any* certificate request the server makes is
# visible. (A real browser refuses the renegotiation -- AH02261 -- or, without
# PHA, gets 403 -- AH10158 -- and the request stays invisible to the client.
# Measured: under webkit-only and TLS 1.3, a no-PHA client with an IE11 or
# Firefox User-Agent sees no CertificateRequest at all, just 403.)
_BROWSER_NOTE = (
    "User-Agent only; the probe accepts renegotiation and offers post-handshake "
    "auth so that a certificate request is visible"
)

DEFAULT_PROFILES: Tuple[Profile, ...] = (
    Profile(
        name="browser-ie11-win7",
        kind=BROWSER,
        user_agent="Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
        tls="1.2",
        pha=True,
        note="IE11 on Windows 7 speaks at most TLS 1.2 and refuses a renegotiation "
        "(AH02261, XMLHttpRequest Network Error 0x4c7); " + _BROWSER_NOTE,
    ),
    Profile(
        name="browser-chrome-win10",
        kind=BROWSER,
        user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        pha=True,
        note="Chrome does not implement post-handshake auth: a request would be a 403; " + _BROWSER_NOTE,
    ),
    Profile(
        name="browser-firefox-linux",
        kind=BROWSER,
        user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        pha=True,
        note="Firefox offers post-handshake auth only if enabled in about:config; " + _BROWSER_NOTE,
    ),
    Profile(
        name="browser-safari-macos",
        kind=BROWSER,
        user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        pha=True,
        note=_BROWSER_NOTE,
    ),
    Profile(
        name="browser-safari-ios",
        kind=BROWSER,
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        pha=True,
        note=_BROWSER_NOTE,
    ),
    Profile(
        name="api-curl",
        kind=API,
        user_agent="curl/7.88.1",
        cert=True,
        pha=True,
        note="curl/libcurl with OpenSSL (also R's httr and curl packages): accepts "
        "renegotiation, offers post-handshake auth",
    ),
    Profile(
        name="api-python-requests",
        kind=API,
        user_agent="python-requests/2.28.1",
        cert=True,
        pha=True,
        note="urllib3 enables post-handshake auth on its SSL contexts",
    ),
    Profile(
        name="api-java-nopha",
        kind=API,
        user_agent="Java/17.0.9",
        cert=True,
        pha=False,
        note="behavioural profile: a client without PHA, like Java JSSE or Go "
        "(under TLS 1.3 Apache answers 403 on /cn, AH10158)",
    ),
)


# --------------------------------------------------------------------------
# The client matrix


@dataclass(frozen=True)
class Client:
    """A real client family, described by what its TLS stack does.

    ``pha``: offers TLS 1.3 post-handshake auth. ``renegotiation``: accepts a
    server-initiated TLS 1.2 renegotiation. ``max_tls``: the highest version
    it speaks. ``validated``: the real binary the test suite runs against the
    harness to check this behaviour ("" when the behaviour is taken from
    documentation only). ``source``: where the behaviour is known from.
    """

    id: str
    kind: str
    label: str
    user_agent: str
    stack: str
    pha: bool
    renegotiation: bool
    max_tls: str = "1.3"
    headers: Tuple[Tuple[str, str], ...] = ()
    validated: str = ""
    source: str = ""

    @property
    def behaviour(self) -> str:
        """One line: stack, PHA, renegotiation, and how this is known."""
        how = f"checked against real {self.validated}" if self.validated else "behavioural profile, not a real binary"
        return (
            f"{self.stack}; {'offers' if self.pha else 'no'} post-handshake auth; "
            f"{'accepts' if self.renegotiation else 'refuses'} renegotiation; TLS <= {self.max_tls}; {how}"
            + (f" ({self.source})" if self.source else "")
        )


_UA_IE11_WIN7 = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"

#: The client families of the matrix (issue 5). User-Agents are real ones.
CLIENTS: Tuple[Client, ...] = (
    Client("browser-ie11-win7", BROWSER, "Internet Explorer 11 on Windows 7", _UA_IE11_WIN7,
           "SChannel (Windows 7)", pha=False, renegotiation=False, max_tls="1.2",
           source="cn-facts.md: refuses the renegotiation, AH02261, XMLHttpRequest Network Error 0x4c7"),
    Client("browser-edge", BROWSER, "Microsoft Edge (Chromium) on Windows 10",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
           "BoringSSL", pha=False, renegotiation=True,
           source="BoringSSL implements no post-handshake auth; renegotiates for HTTP/1.1 client certificates"),
    Client("browser-chrome", BROWSER, "Google Chrome on Windows 10",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36",
           "BoringSSL", pha=False, renegotiation=True,
           source="BoringSSL implements no post-handshake auth; renegotiates for HTTP/1.1 client certificates"),
    Client("browser-firefox", BROWSER, "Mozilla Firefox on Linux",
           "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
           "NSS", pha=False, renegotiation=True,
           source="NSS offers post-handshake auth only with security.tls.enable_post_handshake_auth=true"),
    Client("browser-safari-macos", BROWSER, "Safari on macOS",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.1 Safari/605.1.15",
           "Apple Network.framework", pha=False, renegotiation=True),
    Client("browser-safari-ios", BROWSER, "Safari on iOS",
           "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.1 Mobile/15E148 Safari/604.1",
           "Apple Network.framework", pha=False, renegotiation=True),
    Client("browser-metacatui-xhr", BROWSER, "MetacatUI CORS XMLHttpRequest from IE11 (the incident)", _UA_IE11_WIN7,
           "SChannel (Windows 7)", pha=False, renegotiation=False, max_tls="1.2",
           headers=(("Origin", "https://search.dataone.org"), ("Referer", "https://search.dataone.org/data")),
           source="cn-facts.md: the CORS call fails with XMLHttpRequest: Network Error 0x4c7"),
    Client("api-curl", API, "curl / libcurl", "curl/7.88.1",
           "OpenSSL (libcurl)", pha=True, renegotiation=True, validated="curl 7.88 (Debian 12)"),
    Client("api-python-requests", API, "python-requests", "python-requests/2.28.1",
           "OpenSSL (urllib3 turns post-handshake auth on)", pha=True, renegotiation=True,
           validated="python3-requests 2.28 (Debian 12)"),
    Client("api-r-httr", API, "R httr / curl package", "libcurl/7.88.1 r-curl/5.0.0 httr/1.4.7",
           "OpenSSL (libcurl, the same library as curl)", pha=True, renegotiation=True,
           source="r-cran-curl links Debian's libcurl4 (OpenSSL), the TLS stack of the curl row; "
                  "R itself is not installed by the tests (r-base-core is ~100 MB for no new TLS behaviour)"),
    Client("api-java-httpclient", API, "Java 11+ java.net.http.HttpClient", "Java-http-client/17.0.15",
           "JSSE", pha=False, renegotiation=True, validated="OpenJDK 17 HttpClient",
           source="JSSE implements no TLS 1.3 post-handshake auth"),
    Client("api-go", API, "Go net/http (default tls.Config)", "Go-http-client/1.1",
           "Go crypto/tls", pha=False, renegotiation=False, validated="Go 1.19 net/http",
           source="crypto/tls: no post-handshake auth; Renegotiation defaults to RenegotiateNever"),
    Client("api-d1-java", API, "DataONE Java client (d1_libclient_java, Apache HttpClient 4)",
           "Apache-HttpClient/4.5.13 (Java/1.8.0_392)",
           "JSSE", pha=False, renegotiation=True, validated="OpenJDK 17 (JSSE) with this User-Agent",
           source="d1_libclient_java builds HttpClients.custom(), which sends HttpClient's default User-Agent"),
    Client("api-d1-python", API, "DataONE Python client (d1_client / d1_libclient_python)",
           "DataONE-Python/3.2.0 +http://dataone.org/",
           "OpenSSL (requests/urllib3)", pha=True, renegotiation=True,
           validated="python3-requests 2.28 with this User-Agent",
           source="d1_common.const.USER_AGENT; d1_client sends requests through a requests.Session"),
    Client("api-python-ssl", API, "Python with its own ssl.SSLContext() (post-handshake auth off)",
           "Python-urllib/3.11",
           "OpenSSL (a bare SSLContext leaves post_handshake_auth False)", pha=False, renegotiation=True,
           validated="Python 3.11 ssl", source="cn-facts.md"),
)


def get_client(client_id: str, clients: Iterable[Client] = CLIENTS) -> Client:
    """The client family called ``client_id`` (KeyError if none)."""
    for c in clients:
        if c.id == client_id:
            return c
    raise KeyError(client_id)


def row_name(client: Client, tls: str, cert: bool, instrument: bool = False) -> str:
    """``<client>/<tls>/<cert|nocert>[/pha]``: the unique name of one matrix row."""
    return f"{client.id}/{tls}/{'cert' if cert else 'nocert'}" + ("/pha" if instrument else "")


def matrix_profiles(
    clients: Iterable[Client] = CLIENTS,
    tls_versions: Iterable[str] = TLS_VERSIONS,
    certs: Iterable[bool] = (False, True),
    instruments: bool = True,
) -> List[Profile]:
    """The rows of the matrix: each client x TLS version it speaks x with/without a certificate.

    Under TLS 1.3 a browser (no post-handshake auth) gets one more row that
    offers PHA (``instrument=True``): a real browser cannot show the
    server's certificate request under TLS 1.3 -- it gets a 403 instead --
    and the instrument row makes that request visible. (For Firefox the
    instrument is also the real client with its PHA preference turned on.)
    """
    order = {"1.2": 0, "1.3": 1}
    versions = sorted(set(tls_versions), key=lambda v: order[v])
    rows: List[Profile] = []
    for c in clients:
        for tls in versions:
            if order[tls] > order[c.max_tls]:
                continue
            for cert in certs:
                variants = [False]
                if instruments and tls == "1.3" and c.kind == BROWSER and not c.pha:
                    variants.append(True)
                for inst in variants:
                    rows.append(Profile(
                        name=row_name(c, tls, cert, inst), kind=c.kind, user_agent=c.user_agent, cert=cert,
                        tls=tls, pha=c.pha or inst, renegotiation=c.renegotiation, client=c.id,
                        headers=c.headers, instrument=inst,
                        note=(f"{c.label}: " + ("probe instrument: offers post-handshake auth so that a request "
                                                "is visible; " if inst else "") + c.behaviour),
                    ))
    return rows


def get_profile(name: str, profiles: Optional[Iterable[Profile]] = None) -> Profile:
    """The profile called ``name`` (KeyError if none).

    Without ``profiles``: the legacy `DEFAULT_PROFILES` first, then every
    row of the full matrix (`matrix_profiles`).
    """
    pool: Iterable[Profile] = profiles if profiles is not None else (
        list(DEFAULT_PROFILES) + matrix_profiles())
    for p in pool:
        if p.name == name:
            return p
    raise KeyError(name)


# --------------------------------------------------------------------------
# Observed handshake messages and their interpretation (pure)


@dataclass(frozen=True)
class Event:
    """One TLS protocol message as seen by the client.

    ``direction``: "read" (from the server) or "write" (to the server).
    ``kind``: the OpenSSL name of a handshake message ("ClientHello",
    "CertificateRequest", "HelloRequest", "Finished", ...) or "Alert".
    ``length``: message length in bytes. ``detail``: for an alert,
    "<level> <description>" such as "fatal unknown_ca". ``version``: the
    record's protocol version as OpenSSL reports it ("1.2", "1.3"), if known.
    """

    direction: str
    kind: str
    length: int = 0
    detail: str = ""
    version: Optional[str] = None


@dataclass(frozen=True)
class Observation:
    cert_requested: bool
    how: Optional[str]
    cert_sent: bool
    alerts_received: Tuple[str, ...]


def classify(events: Sequence[Event], tls: Optional[str] = None) -> Observation:
    """Decide whether and how the server asked for a client certificate.

    The initial handshake is complete once both sides sent Finished (order
    differs between TLS 1.2 and 1.3, so wait for both). A CertificateRequest
    before that is part of the initial handshake; after it, one that follows
    a HelloRequest is a server-initiated renegotiation (TLS 1.2), otherwise
    under TLS 1.3 it is post-handshake authentication. The first request
    decides ``how``. A HelloRequest the client answered with a
    ``no_renegotiation`` alert (or that no CertificateRequest followed, the
    connection ending first) is a request the client refused:
    ``how = "renegotiation-refused"`` -- after the request headers, Apache
    renegotiates only to ask for a certificate.
    """
    client_finished = server_finished = False
    established = False
    hello_request = False
    how: Optional[str] = None
    cert_sent = False
    alerts: List[str] = []
    for ev in events:
        if ev.kind == "Finished":
            if ev.direction == "write":
                client_finished = True
            else:
                server_finished = True
            if client_finished and server_finished:
                established = True
        elif ev.direction == "read" and ev.kind == "HelloRequest" and established:
            hello_request = True
        elif ev.direction == "read" and ev.kind == "CertificateRequest" and how is None:
            if not established:
                how = HOW_HANDSHAKE
            elif hello_request or tls == "1.2":
                how = HOW_RENEGOTIATION
            else:
                how = HOW_POST_HANDSHAKE
        elif ev.direction == "write" and ev.kind == "Certificate" and how is not None:
            if ev.length > _EMPTY_CERTIFICATE_MAX:
                cert_sent = True
        elif ev.direction == "read" and ev.kind == "Alert" and ev.detail and "close_notify" not in ev.detail:
            alerts.append(ev.detail)
    if how is None and hello_request:
        how = HOW_RENEGOTIATION_REFUSED
    return Observation(how is not None, how, cert_sent, tuple(alerts))


# Handshake message types (RFC 5246 / 8446), named like OpenSSL's -msg output.
_HANDSHAKE_NAMES = {
    0: "HelloRequest",
    1: "ClientHello",
    2: "ServerHello",
    3: "HelloVerifyRequest",
    4: "NewSessionTicket",
    5: "EndOfEarlyData",
    6: "HelloRetryRequest",
    8: "EncryptedExtensions",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
    21: "CertificateUrl",
    22: "CertificateStatus",
    23: "SupplementalData",
    24: "KeyUpdate",
    67: "NextProto",
    254: "MessageHash",
}

# Alert descriptions, named like OpenSSL's -msg output.
_ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    116: "certificate_required",
}
_ALERT_LEVELS = {1: "warning", 2: "fatal"}

_CONTENT_ALERT = 21
_CONTENT_HANDSHAKE = 22


def _python_event(direction: str, content_type: Any, data: bytes) -> Optional[Event]:
    """An `Event` from the arguments of ``SSLContext._msg_callback`` (or None)."""
    try:
        ctype = int(content_type)
    except (TypeError, ValueError):
        return None
    if ctype == _CONTENT_HANDSHAKE and data:
        code = data[0]
        return Event(str(direction), _HANDSHAKE_NAMES.get(code, f"handshake-{code}"), len(data))
    if ctype == _CONTENT_ALERT and len(data) >= 2:
        level = _ALERT_LEVELS.get(data[0], str(data[0]))
        desc = _ALERT_NAMES.get(data[1], str(data[1]))
        return Event(str(direction), "Alert", len(data), f"{level} {desc}")
    return None


_MSG_LINE = re.compile(r"^(<<<|>>>)\s+(?P<pre>.*?)\s*\[length (?P<len>[0-9A-Fa-f]+)\](?P<post>.*)$")


def parse_msg_line(line: str) -> Optional[Event]:
    """An `Event` from one line of ``openssl s_client -msg`` output, or None.

    Lines look like ``<<< TLS 1.3, Handshake [length 0038], CertificateRequest``
    or ``<<< TLS 1.2, Alert [length 0002], fatal unknown_ca``; record headers,
    inner content types and hex dumps are ignored.
    """
    m = _MSG_LINE.match(line.rstrip("\r\n"))
    if not m:
        return None
    direction = "read" if line.startswith("<<<") else "write"
    parts = [p.strip() for p in m.group("pre").split(",")]
    content = parts[-1] if len(parts) >= 2 else ""
    vm = re.match(r"^TLS (1\.[0-3])$", parts[0]) if len(parts) >= 2 else None
    version = vm.group(1) if vm else None
    post = m.group("post").strip()
    if post.startswith(","):
        post = post[1:].strip()
    length = int(m.group("len"), 16)
    if content == "Handshake" and post:
        return Event(direction, post.split()[0], length, version=version)
    if content == "Alert" and post:
        return Event(direction, "Alert", length, " ".join(post.split()), version=version)
    return None


_TLS_NAME = re.compile(r"^TLSv(1\.[0-3])$|^TLSv1$")


def _norm_tls(name: Optional[str]) -> Optional[str]:
    """"TLSv1.3" -> "1.3"; None and unknown names -> None or as given."""
    if not name:
        return None
    m = _TLS_NAME.match(name)
    if m:
        return m.group(1) or "1.0"
    return name


_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)?[ \t]+(\d{3})(?:[ \t]|\r?$)", re.MULTILINE)


def parse_http_response(data: bytes) -> Tuple[Optional[int], Dict[str, str]]:
    """Status code and headers (lower-cased names) of the first HTTP response in ``data``."""
    m = _STATUS_LINE.search(data)
    if not m:
        return None, {}
    status = int(m.group(1))
    head = data[m.end():].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    headers: Dict[str, str] = {}
    for raw in head.splitlines()[1:]:
        name, sep, value = raw.partition(b":")
        if sep and name.strip():
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return status, headers


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _host_port(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}" if port != 443 else host


def build_request(
    path: str, server_name: str, port: int, user_agent: str, headers: Sequence[Tuple[str, str]] = ()
) -> bytes:
    """The HTTP/1.1 GET the probe sends: Host = server_name, ``Connection: close``, extra ``headers``."""
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    for what, value in (("path", path), ("server_name", server_name), ("user_agent", user_agent)):
        if any(c in value for c in "\r\n") or (what != "user_agent" and " " in value):
            raise ValueError(f"invalid characters in {what}: {value!r}")
    for k, v in headers:
        if not re.fullmatch(r"[A-Za-z0-9-]+", k) or any(c in v for c in "\r\n"):
            raise ValueError(f"invalid header {k!r}: {v!r}")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {_host_port(server_name, port)}",
        f"User-Agent: {user_agent}",
        "Accept: */*",
    ] + [f"{k}: {v}" for k, v in headers] + [
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")


# --------------------------------------------------------------------------
# Results


@dataclass
class ProbeResult:
    """What one probe saw.

    ``tls``: negotiated version ("1.2", "1.3"), None if no handshake.
    ``how``: "handshake", "renegotiation", "post-handshake",
    "renegotiation-refused" or None.
    ``status``: HTTP status, None if no response. ``verified``: mod_ssl's
    SSL_CLIENT_VERIFY when the server echoes it in a response header;
    otherwise inferred when a certificate was requested: "NONE" (none sent),
    "FAILED" (sent, and the server answered with a fatal alert), "SUCCESS"
    (sent, and the exchange completed with an HTTP response -- mod_ssl aborts
    the handshake when verification fails, short of ``optional_no_ca``);
    None when not requested or not observable.
    ``skipped``: why the row was not probed (the server does not offer its
    TLS version), else None. ``diagnosis``: what a failure most likely
    means (Apache's AH10158 / AH02261 / a 421), else None.
    """

    profile: Profile
    tls: Optional[str] = None
    cert_requested: bool = False
    how: Optional[str] = None
    status: Optional[int] = None
    verified: Optional[str] = None
    error: Optional[str] = None
    cert_sent: bool = False
    alerts: Tuple[str, ...] = ()
    backend: Optional[str] = None
    skipped: Optional[str] = None
    diagnosis: Optional[str] = None

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def kind(self) -> str:
        return self.profile.kind

    @property
    def works(self) -> bool:
        """The client got a usable HTTP answer: a response that is not 403/421 nor a 5xx."""
        return (
            self.skipped is None
            and self.status is not None
            and self.status not in (403, 421)
            and self.status < 500
        )

    @property
    def authenticated(self) -> bool:
        """It works, and the server verified the certificate it presented."""
        return self.works and (self.verified or "").upper() == "SUCCESS"

    @property
    def outcome(self) -> str:
        """One word for tables and gates: skipped, authenticated, ok, refused (an HTTP error) or failed."""
        if self.skipped is not None:
            return "skipped"
        if self.authenticated:
            return "authenticated"
        if self.works:
            return "ok"
        if self.status is not None:
            return "refused"
        return "failed"

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.profile.name,
            "client": self.profile.family,
            "kind": self.profile.kind,
            "user_agent": self.profile.user_agent,
            "cert": self.profile.cert,
            "pha": self.profile.pha,
            "renegotiation": self.profile.renegotiation,
            "instrument": self.profile.instrument,
            "tls_pinned": self.profile.tls,
            "tls": self.tls,
            "cert_requested": self.cert_requested,
            "how": self.how,
            "status": self.status,
            "cert_sent": self.cert_sent,
            "verified": self.verified,
            "outcome": self.outcome,
            "alerts": list(self.alerts),
            "error": self.error,
            "diagnosis": self.diagnosis,
            "skipped": self.skipped,
            "backend": self.backend,
            "note": self.profile.note,
        }

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "ProbeResult":
        """Inverse of `to_json` (for ``probe --compare`` and a saved before-matrix)."""
        profile = Profile(
            name=str(doc["name"]), kind=str(doc.get("kind") or API), user_agent=str(doc.get("user_agent") or ""),
            cert=bool(doc.get("cert", False)), tls=doc.get("tls_pinned"), pha=bool(doc.get("pha", False)),
            note=str(doc.get("note") or ""), renegotiation=bool(doc.get("renegotiation", True)),
            client=str(doc.get("client") or "") if doc.get("client") != doc.get("name") else "",
            instrument=bool(doc.get("instrument", False)),
        )
        return cls(
            profile=profile, tls=doc.get("tls"), cert_requested=bool(doc.get("cert_requested", False)),
            how=doc.get("how"), status=doc.get("status"), verified=doc.get("verified"), error=doc.get("error"),
            cert_sent=bool(doc.get("cert_sent", False)), alerts=tuple(doc.get("alerts") or ()),
            backend=doc.get("backend"), skipped=doc.get("skipped"), diagnosis=doc.get("diagnosis"),
        )


def results_from_json(doc: Dict[str, Any]) -> List[ProbeResult]:
    """The results of a ``probe --json`` document (``{"profiles": [...]}``)."""
    rows = doc.get("profiles")
    if not isinstance(rows, list):
        raise ValueError("not a probe document: no \"profiles\" list")
    return [ProbeResult.from_json(r) for r in rows]


def _same_words(alert: str, error: str) -> bool:
    """Does ``error`` already name ``alert`` ("unknown_ca" vs "tlsv1 alert unknown ca")?"""
    return alert.replace("_", " ").lower() in error.replace("_", " ").lower()


def _finish(
    profile: Profile,
    backend: str,
    events: Sequence[Event],
    tls: Optional[str],
    response: bytes,
    error: Optional[str],
    verify_headers: Sequence[str] = (),
) -> ProbeResult:
    """Assemble a `ProbeResult` from what a backend observed (pure)."""
    obs = classify(events, tls)
    status, headers = parse_http_response(response)
    verified: Optional[str] = None
    for h in list(verify_headers) + list(VERIFY_HEADERS):
        h = h.lower()
        if headers.get(h):
            verified = headers[h]
            break
    fatal = [a for a in obs.alerts_received if a.startswith("fatal")]
    if verified is None and obs.cert_requested:
        if not obs.cert_sent:
            verified = "NONE"
        elif fatal:
            verified = "FAILED"
        elif status is not None:
            verified = "SUCCESS"
    if error is None and status is None:
        error = "no HTTP response"
    if error is not None and fatal and not any(_same_words(a.split(" ", 1)[-1], error) for a in fatal):
        error = f"{error} (server alert: {', '.join(fatal)})"
    diagnosis = diagnose(profile, tls, obs.how, status)
    return ProbeResult(
        profile=profile,
        tls=tls,
        cert_requested=obs.cert_requested,
        how=obs.how,
        status=status,
        verified=verified,
        error=error,
        cert_sent=obs.cert_sent,
        alerts=obs.alerts_received,
        backend=backend,
        diagnosis=diagnosis,
    )


def diagnose(profile: Profile, tls: Optional[str], how: Optional[str], status: Optional[int]) -> Optional[str]:
    """What a failed row most likely means (pure; the error log says for sure)."""
    if how == HOW_RENEGOTIATION_REFUSED:
        return ("the server renegotiated to ask for a certificate and the client refused: "
                "no answer (Apache AH02261)")
    if tls == "1.3" and status == 403 and not profile.pha and how is None:
        return ("403 under TLS 1.3 without post-handshake auth: the server wanted to ask for a certificate "
                "and could not (Apache AH10158)")
    if status == 421:
        return "421 Misdirected Request: the TLS connection (SNI) belongs to another vhost than the Host header"
    return None


# --------------------------------------------------------------------------
# openssl s_client backend: pure parts


def s_client_argv(
    host: str,
    port: int,
    server_name: str,
    profile: Profile,
    msgfile: str,
    *,
    ca_file: Optional[str] = None,
    client_cert: Optional[str] = None,
    client_key: Optional[str] = None,
    openssl: str = "openssl",
) -> List[str]:
    """The ``openssl s_client`` command line for one probe."""
    connect = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    argv = [openssl, "s_client", "-connect", connect]
    if server_name and not _is_ip(server_name):
        argv += ["-servername", server_name]
    else:
        argv += ["-noservername"]
    # -quiet: stdout carries only the response (session tickets would
    # otherwise be dumped into the middle of it); it implies -ign_eof, so
    # s_client reads until the server closes after ``Connection: close``.
    argv += ["-quiet", "-ign_eof", "-nocommands", "-msg", "-msgfile", msgfile]
    if profile.tls == "1.2":
        argv.append("-tls1_2")
    elif profile.tls == "1.3":
        argv.append("-tls1_3")
    if profile.pha:
        argv.append("-enable_pha")
    if not profile.renegotiation:
        argv.append("-no_renegotiation")
    if profile.cert and client_cert:
        argv += ["-cert", client_cert]
        if client_key:
            argv += ["-key", client_key]
    if ca_file:
        argv += ["-CAfile", ca_file, "-verify_return_error"]
        if server_name:
            argv += (["-verify_ip", server_name] if _is_ip(server_name) else ["-verify_hostname", server_name])
    return argv


_NEGOTIATED = re.compile(r"^(?:New|Reused), (TLSv1(?:\.[0-3])?|SSLv3), Cipher is", re.MULTILINE)
_PROTOCOL = re.compile(r"^\s*Protocol\s*:\s*(TLSv1(?:\.[0-3])?)\s*$", re.MULTILINE)
_OPENSSL_ERROR = re.compile(r"^[0-9A-F]+:error:[0-9A-F]+:[^:]*:([^:]*):([^:]*)", re.MULTILINE)


def parse_s_client(
    stdout: bytes, msgs: str, stderr: str, returncode: Optional[int]
) -> Tuple[List[Event], Optional[str], bytes, Optional[str]]:
    """Events, negotiated TLS version, response bytes and error from one s_client run."""
    events = [ev for ev in (parse_msg_line(line) for line in msgs.splitlines()) if ev is not None]
    text = stdout.decode("latin-1")
    # With -quiet the session summary is not printed (it would interleave with
    # the response); the negotiated version is the one OpenSSL reports for
    # the server's Finished (a ServerHello still carries the client's maximum).
    finished = [ev.version for ev in events if ev.kind == "Finished" and ev.direction == "read" and ev.version]
    m = _NEGOTIATED.search(text) or _PROTOCOL.search(text)
    tls = finished[0] if finished else (_norm_tls(m.group(1)) if m else None)
    error: Optional[str] = None
    errs = _OPENSSL_ERROR.findall(stderr)
    if errs:
        error = "; ".join(f"{func}: {reason}" for func, reason in errs)
    elif returncode not in (0, None):
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        error = lines[-1] if lines else f"openssl s_client exited with {returncode}"
    if re.search(r"^verify error:", stderr, re.MULTILINE) and error is None and tls is None:
        error = "server certificate verification failed"
    return events, tls, stdout, error


# --------------------------------------------------------------------------
# Effect edge


# CPython's private TLS message hook (3.8+). Without it the python backend
# would see no messages at all and report every client as "not asked".
_HAS_MSG_CALLBACK = hasattr(ssl.SSLContext, "_msg_callback")


def default_backend() -> str:
    """"python" when CPython's ``SSLContext._msg_callback`` hook exists, else "openssl"."""
    return "python" if _HAS_MSG_CALLBACK else "openssl"


def probe(
    host: str,
    port: int,
    server_name: str,
    path: str,
    profile: Profile,
    *,
    ca_file: Optional[str] = None,
    client_cert: Optional[str] = None,
    client_key: Optional[str] = None,
    timeout: float = 10.0,
    backend: Optional[str] = None,
    openssl: str = "openssl",
    verify_headers: Sequence[str] = (),
) -> ProbeResult:
    """Connect to ``host:port`` as ``profile``, ``GET path``, and report.

    SNI and the Host header are ``server_name``. Without ``ca_file`` the
    server certificate is not verified (the probe checks our own local
    server, whose certificate need not name the address we connect to); with
    it, chain and name are verified. The client certificate is presented only
    if ``profile.cert`` and ``client_cert`` is given. Never raises for
    network or TLS failures: they land in ``ProbeResult.error``.
    ``verify_headers``: extra response header names, tried before
    `VERIFY_HEADERS`, that carry the server's SSL_CLIENT_VERIFY.
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    request = build_request(path, server_name, port, profile.user_agent, profile.headers)
    if backend == "python":
        result = _probe_python(host, port, server_name, request, profile, ca_file, client_cert, client_key, timeout)
    else:
        result = _probe_openssl(
            host, port, server_name, request, profile, ca_file, client_cert, client_key, timeout, openssl
        )
    events, tls, response, error = result
    return _finish(profile, backend, events, tls, response, error, verify_headers)


def probe_all(
    host: str,
    port: int,
    server_name: str,
    path: str,
    profiles: Iterable[Profile] = DEFAULT_PROFILES,
    **kwargs: Any,
) -> List[ProbeResult]:
    """`probe` for each profile, in order (keyword arguments passed through)."""
    return [probe(host, port, server_name, path, p, **kwargs) for p in profiles]


@dataclass(frozen=True)
class Handshake:
    """A bare TLS handshake (no request): did it complete, which version and ALPN protocol."""

    ok: bool
    tls: Optional[str] = None
    alpn: Optional[str] = None
    error: Optional[str] = None


def handshake(
    host: str,
    port: int,
    server_name: Optional[str],
    *,
    tls: Optional[str] = None,
    alpn: Sequence[str] = (),
    timeout: float = 5.0,
) -> Handshake:
    """One TLS handshake with Python's ``ssl``, nothing sent after it.

    ``server_name``: SNI (None or an IP address: no SNI). ``tls`` pins the
    version; ``alpn`` offers these protocols (e.g. ``("h2", "http/1.1")``).
    The server certificate is not verified (our own local server).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls is not None:
        ctx.minimum_version = ctx.maximum_version = _TLS_PINS[tls]
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    sni = server_name if server_name and not _is_ip(server_name) else None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=sni) as t:
                return Handshake(True, _norm_tls(t.version()), t.selected_alpn_protocol())
    except (ssl.SSLError, OSError) as exc:
        return Handshake(False, error=_describe(exc))


def server_tls_versions(host: str, port: int, server_name: Optional[str], timeout: float = 5.0) -> Dict[str, Handshake]:
    """For each TLS version the probe knows, a pinned handshake with SNI ``server_name``."""
    return {v: handshake(host, port, server_name, tls=v, timeout=timeout) for v in TLS_VERSIONS}


def skipped_result(profile: Profile, reason: str) -> ProbeResult:
    """A row that was not probed, and why."""
    return ProbeResult(profile=profile, skipped=reason)


def probe_matrix(
    host: str,
    port: int,
    server_name: str,
    path: str,
    profiles: Optional[Iterable[Profile]] = None,
    *,
    client_cert: Optional[str] = None,
    client_key: Optional[str] = None,
    timeout: float = 10.0,
    **kwargs: Any,
) -> List[ProbeResult]:
    """Probe the client matrix against a live vhost.

    ``profiles`` default to `matrix_profiles`, with the certificate rows
    only when ``client_cert`` is given. The TLS versions the server offers
    (for SNI ``server_name``) are found first; rows pinned to a version it
    refuses are returned as skipped, saying so, instead of as failures. If
    the server offers no version at all (unreachable), every row is probed
    anyway so that each carries the error.
    """
    if profiles is None:
        profiles = matrix_profiles(certs=(False, True) if client_cert else (False,))
    rows = list(profiles)
    offered = server_tls_versions(host, port, server_name, timeout=min(timeout, 5.0))
    reachable = any(h.ok for h in offered.values())

    def one(p: Profile) -> ProbeResult:
        h = offered.get(p.tls) if p.tls else None
        if reachable and h is not None and not h.ok:
            return skipped_result(p, f"the server does not offer TLS {p.tls} for {server_name} ({h.error})")
        return probe(host, port, server_name, path, p, client_cert=client_cert, client_key=client_key,
                     timeout=timeout, **kwargs)

    # Rows are independent connections: a few at a time keeps the live check short
    # (it sits between the reload and the commit) without loading the server.
    with concurrent.futures.ThreadPoolExecutor(max_workers=MATRIX_CONCURRENCY) as pool:
        return list(pool.map(one, rows))


#: Connections the matrix opens at once (bench/RESULTS.md: 33 rows one by one took ~220 ms).
MATRIX_CONCURRENCY = 6


# What a backend observed: events, negotiated TLS version, response bytes, error.
_Raw = Tuple[List[Event], Optional[str], bytes, Optional[str]]

_TLS_PINS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# ssl.OP_NO_RENEGOTIATION exists since Python 3.7 with OpenSSL >= 1.1.0h; the value is OpenSSL's.
_OP_NO_RENEGOTIATION = getattr(ssl, "OP_NO_RENEGOTIATION", 0x40000000)


def _python_context(
    profile: Profile, ca_file: Optional[str], client_cert: Optional[str], client_key: Optional[str]
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if profile.tls is not None:
        ctx.minimum_version = _TLS_PINS[profile.tls]
        ctx.maximum_version = _TLS_PINS[profile.tls]
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Explicit both ways: http.client turns PHA on when a certificate is loaded.
    ctx.post_handshake_auth = bool(profile.pha)
    if not profile.renegotiation:
        # Answer a HelloRequest with a no_renegotiation alert (IE11 on Windows 7, Go's default).
        ctx.options |= _OP_NO_RENEGOTIATION
    if profile.cert and client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    # Only HTTP/1.1: HTTP/2 forbids renegotiation and would hide the answer.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _describe(exc: BaseException) -> str:
    """A one-line description of a network or TLS failure."""
    if isinstance(exc, ssl.SSLError):
        # "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2546)"
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc)) or exc.__class__.__name__
    if isinstance(exc, socket.timeout):
        return "timeout"
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


def _probe_python(
    host: str,
    port: int,
    server_name: str,
    request: bytes,
    profile: Profile,
    ca_file: Optional[str],
    client_cert: Optional[str],
    client_key: Optional[str],
    timeout: float,
) -> _Raw:
    """Python ``ssl`` backend: events from ``SSLContext._msg_callback``."""
    if not _HAS_MSG_CALLBACK:
        return [], None, b"", "python backend unavailable: no ssl.SSLContext._msg_callback (use backend='openssl')"
    events: List[Event] = []

    def on_message(conn: Any, direction: Any, version: Any, content_type: Any, msg_type: Any, data: bytes) -> None:
        ev = _python_event(direction, content_type, data)
        if ev is not None:
            events.append(ev)

    try:
        ctx = _python_context(profile, ca_file, client_cert, client_key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return [], None, b"", f"client setup: {_describe(exc)}"
    ctx._msg_callback = on_message  # type: ignore[attr-defined]

    tls: Optional[str] = None
    chunks: List[bytes] = []
    error: Optional[str] = None
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return [], None, b"", f"connect {host}:{port}: {_describe(exc)}"
    try:
        with ctx.wrap_socket(sock, server_hostname=server_name or None) as tls_sock:
            tls = _norm_tls(tls_sock.version())
            tls_sock.sendall(request)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout("timed out")
                tls_sock.settimeout(remaining)
                data = tls_sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except (ssl.SSLError, OSError) as exc:
        error = _describe(exc)
    finally:
        sock.close()
    return list(events), tls, b"".join(chunks), error


def _probe_openssl(
    host: str,
    port: int,
    server_name: str,
    request: bytes,
    profile: Profile,
    ca_file: Optional[str],
    client_cert: Optional[str],
    client_key: Optional[str],
    timeout: float,
    openssl: str,
) -> _Raw:
    """``openssl s_client -msg`` backend: events parsed from the message log."""
    exe = shutil.which(openssl) if os.sep not in openssl else openssl
    if not exe:
        return [], None, b"", f"{openssl}: command not found"
    fd, msgfile = tempfile.mkstemp(prefix="dataone-cn-sslverify-probe-", suffix=".msg")
    os.close(fd)
    try:
        argv = s_client_argv(
            host, port, server_name, profile, msgfile,
            ca_file=ca_file, client_cert=client_cert, client_key=client_key, openssl=exe,
        )
        env = dict(os.environ)
        env.setdefault("LC_ALL", "C")
        timed_out = False
        try:
            proc = subprocess.run(
                argv, input=request, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env
            )
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, stderr, rc = exc.stdout or b"", exc.stderr or b"", None
            timed_out = True
        with open(msgfile, encoding="latin-1") as fh:
            msgs = fh.read()
    finally:
        try:
            os.unlink(msgfile)
        except OSError:
            pass
    events, tls, response, error = parse_s_client(stdout, msgs, stderr.decode("latin-1"), rc)
    if timed_out:
        error = "timeout" if error is None else f"timeout; {error}"
    return events, tls, response, error


# --------------------------------------------------------------------------
# Apply gate and presentation (pure)


@dataclass(frozen=True)
class Verdict:
    """Whether the live server behaves as the change intends.

    ``ok`` only if every browser profile completed a handshake and was never
    asked for a certificate (nor refused with 403 under TLS 1.3 without PHA,
    which is how an unseen request shows), and every API profile that offers
    PHA was asked.
    ``problems`` say why not; ``warnings`` do not block (for example 403 for
    API clients without PHA under TLS 1.3, which the policy cannot fix).
    """

    ok: bool
    summary: str
    problems: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def verdict(results: Sequence[ProbeResult]) -> Verdict:
    """The apply gate of a single probe run: browsers not asked, API clients (with PHA) asked.

    Skipped rows (a TLS version the server does not offer) are ignored.
    `gate_apply` is the matrix-driven gate that also compares with the
    state before the change.
    """
    problems: List[str] = []
    warnings: List[str] = []
    results = [r for r in results if r.skipped is None]
    browsers = [r for r in results if r.kind == BROWSER]
    apis = [r for r in results if r.kind == API and r.profile.pha]

    asked = [r for r in browsers if r.cert_requested]
    unknown = [r for r in browsers if not r.cert_requested and r.tls is None]
    # Without PHA, a TLS 1.3 client never sees the request: Apache answers 403
    # instead (AH10158). For a browser that is the failure this gate exists for.
    refused = [
        r for r in browsers if not r.cert_requested and r.tls == "1.3" and not r.profile.pha and r.status == 403
    ]
    for r in asked:
        problems.append(f"{r.name} was asked for a client certificate ({r.how}, TLS {r.tls})")
    for r in refused:
        problems.append(
            f"{r.name}: 403 under TLS 1.3 without post-handshake auth: the server presumably wanted "
            "a client certificate (Apache AH10158); probe with a profile that offers PHA to see it"
        )
    for r in unknown:
        problems.append(f"{r.name}: inconclusive, no TLS handshake: {r.error}")
    if not browsers:
        problems.append("no browser profile was probed")
        browser_part = "no browser probed"
    elif asked or refused:
        browser_part = "browser asked (" + ", ".join(
            [f"{r.name}: {r.how}" for r in asked] + [f"{r.name}: 403 without PHA" for r in refused]
        ) + ")"
    elif unknown:
        browser_part = "browser inconclusive (" + ", ".join(r.name for r in unknown) + ")"
    else:
        browser_part = "browser not asked"

    not_asked = [r for r in apis if not r.cert_requested]
    for r in not_asked:
        why = f": {r.error}" if r.error else ""
        problems.append(f"{r.name} was not asked for a client certificate{why}")
    if not apis:
        problems.append("no API profile offering post-handshake auth was probed")
        api_part = "no API client probed"
    elif not_asked:
        api_part = "API client not asked (" + ", ".join(r.name for r in not_asked) + ")"
    else:
        api_part = "API client asked"

    reported = {r.name for r in asked + refused + unknown + not_asked}
    for r in results:
        if r.name in reported:
            continue
        if r.kind == API and not r.profile.pha and r.tls == "1.3" and r.status == 403:
            warnings.append(
                f"{r.name}: 403 under TLS 1.3: clients without post-handshake auth "
                "(Java JSSE, Go) are refused where a certificate is optional"
            )
        elif r.error:
            warnings.append(f"{r.name}: {r.error}")
        elif r.kind == BROWSER and r.status == 403:
            warnings.append(f"{r.name}: 403 Forbidden")
    return Verdict(not problems, f"{browser_part}, {api_part}", tuple(problems), tuple(warnings))


_TLS_ORDER = {"1.2": 0, "1.3": 1}


def _effective(results: Iterable[ProbeResult]) -> Dict[Tuple[str, bool, bool], ProbeResult]:
    """Per (client, cert, instrument): the row a real client would get by negotiating.

    That is the probed (not skipped) row at the highest TLS version; a row
    whose version was not pinned negotiated by itself and wins.
    """
    best: Dict[Tuple[str, bool, bool], ProbeResult] = {}
    for r in results:
        if r.skipped is not None:
            continue
        key = (r.profile.family, r.profile.cert, r.profile.instrument)
        rank = _TLS_ORDER.get(r.profile.tls, 2) if r.profile.tls else 2
        cur = best.get(key)
        if cur is None or rank > (_TLS_ORDER.get(cur.profile.tls, 2) if cur.profile.tls else 2):
            best[key] = r
    return best


def _detail(r: ProbeResult) -> str:
    bits = []
    if r.status is not None:
        bits.append(str(r.status))
    if r.diagnosis:
        bits.append(r.diagnosis)
    elif r.error:
        bits.append(r.error)
    return "; ".join(bits) or "no answer"


def _regression(before: ProbeResult, after: ProbeResult) -> Optional[str]:
    """Why ``after`` is worse than ``before`` for an API client, or None."""
    if before.authenticated and not after.authenticated:
        return (f"{after.name}: authenticated with its certificate before (TLS {before.tls}), "
                f"{after.outcome} now (TLS {after.tls}: {_detail(after)})")
    if before.works and not after.works:
        return (f"{after.name}: worked before (TLS {before.tls}, {before.status}), "
                f"{after.outcome} now (TLS {after.tls}: {_detail(after)})")
    return None


def _can_be_asked(r: ProbeResult) -> bool:
    """Could this client be asked for a certificate after the request, given its TLS stack?"""
    if r.tls == "1.2":
        return r.profile.renegotiation
    if r.tls == "1.3":
        return r.profile.pha
    return False


def gate_apply(
    before: Optional[Sequence[ProbeResult]], after: Sequence[ProbeResult], *, browsers_unasked: bool = True
) -> Verdict:
    """The apply gate driven by the client matrix (issue 5, item 4).

    ``after``: the matrix probed once the change is live. ``before``: the
    same matrix probed before the change (None when there was no live
    server to probe then). Problems, each of which fails the gate:

    * a browser row was asked for a certificate (in the handshake, by a
      renegotiation -- accepted or refused -- or post-handshake), or got the
      403 that shows an unseen request under TLS 1.3 without PHA, or could
      not even complete a handshake (inconclusive);
    * with ``before``: an API row that worked before (a usable HTTP answer;
      with a certificate: verified SUCCESS) does not any more -- compared
      row by row, and per client as it would negotiate (highest TLS version
      offered), so that a change of the offered TLS versions is judged by
      what real clients get;
    * without ``before``: an API row whose stack can be asked (TLS 1.2 and
      accepts renegotiation, or TLS 1.3 and offers PHA) was not asked;
    * no browser row or no API row was probed at all.

    API rows that fail after *and* failed before (Java or Go under TLS 1.3,
    Go under TLS 1.2) are warnings: the change did not break them.
    Skipped rows (a TLS version the server does not offer) are ignored.
    ``browsers_unasked=False`` (for ``revert``, which puts back a block that
    asks browsers on purpose) reports asked browsers as warnings only and
    keeps the API rule.
    """
    problems: List[str] = []
    warnings: List[str] = []
    rows = [r for r in after if r.skipped is None]
    browsers = [r for r in rows if r.kind == BROWSER]
    apis = [r for r in rows if r.kind == API]

    asked: List[str] = []
    for r in browsers:
        if r.cert_requested:
            asked.append(r.name)
            problems.append(f"{r.name} was asked for a client certificate ({r.how}, TLS {r.tls})")
        elif r.tls == "1.3" and not r.profile.pha and r.status == 403:
            asked.append(r.name)
            problems.append(f"{r.name}: 403 under TLS 1.3 without post-handshake auth: the server wanted "
                            "a client certificate (Apache AH10158)")
        elif r.tls is None:
            asked.append(r.name)
            problems.append(f"{r.name}: inconclusive, no TLS handshake: {r.error}")
        elif not r.works:
            warnings.append(f"{r.name}: {r.outcome} ({_detail(r)})")
    if not browsers_unasked:
        warnings[:0] = [p for p in problems]
        problems = []
    if not browsers:
        problems.append("no browser profile was probed")
        browser_part = "no browser probed"
    elif asked:
        browser_part = f"browser asked ({', '.join(asked)})"
    else:
        browser_part = f"no browser asked ({len(browsers)} rows)"

    flagged: List[str] = []
    if not apis:
        problems.append("no API profile was probed")
        api_part = "no API client probed"
    elif before is not None:
        b_rows = [r for r in before if r.skipped is None and r.kind == API]
        by_name = {r.name: r for r in apis}
        for b in b_rows:
            a = by_name.get(b.name)
            msg = _regression(b, a) if a is not None else None
            if msg:
                flagged.append(b.name)
                problems.append(msg)
        eff_b, eff_a = _effective(b_rows), _effective(apis)
        for key, b in eff_b.items():
            a = eff_a.get(key)
            if a is None:
                if b.works:
                    warnings.append(f"{b.name}: worked before, not probed after")
                continue
            if a.name == b.name or a.name in flagged:
                continue
            msg = _regression(b, a)
            if msg:
                flagged.append(a.name)
                problems.append(msg + " [as negotiated]")
        worked = sum(1 for b in b_rows if b.works)
        api_part = (f"API regression ({', '.join(flagged)})" if flagged
                    else f"no API regression ({worked} of {len(b_rows)} API rows worked before, all still do)")
    else:
        for r in apis:
            if _can_be_asked(r) and not r.cert_requested:
                flagged.append(r.name)
                problems.append(f"{r.name} was not asked for a client certificate" + (f": {r.error}" if r.error else ""))
        api_part = (f"API client not asked ({', '.join(flagged)})" if flagged else "API clients asked")
    for r in apis:
        if r.name in flagged or r.works:
            continue
        why = _detail(r)
        if before is not None:
            why += "; it failed before too"
        warnings.append(f"{r.name}: {r.outcome} ({why})")
    return Verdict(not problems, f"{browser_part}, {api_part}", tuple(problems), tuple(warnings))


def results_to_json(
    results: Sequence[ProbeResult], verdict_: Optional[Verdict] = None, **extra: Any
) -> Dict[str, Any]:
    """``{"profiles": [...]}`` (plus ``"verdict"`` and ``extra`` keys when given), as ``probe --json`` prints."""
    doc: Dict[str, Any] = {"profiles": [r.to_json() for r in results]}
    if verdict_ is not None:
        doc["verdict"] = verdict_.to_json()
    doc.update(extra)
    return doc


_TABLE_HEADER = ("PROFILE", "TLS", "CERT", "PHA", "ASKED", "HOW", "STATUS", "VERIFIED", "OUTCOME", "NOTE")


def _short_note(r: ProbeResult) -> str:
    if r.skipped is not None:
        return f"server does not offer TLS {r.profile.tls}" if r.profile.tls else r.skipped
    if r.how == HOW_RENEGOTIATION_REFUSED:
        return "client refused the renegotiation (AH02261)"
    if r.diagnosis and "AH10158" in r.diagnosis:
        return "no post-handshake auth: 403 (AH10158)"
    if r.diagnosis:
        return r.diagnosis
    if r.profile.instrument:
        return "instrument: offers PHA to show the request"
    return r.error or ""


def format_table(results: Sequence[ProbeResult]) -> str:
    """A fixed-width table, one row per result, for the human output.

    PROFILE is the row's name; TLS the negotiated version (the pinned one,
    in brackets, for a skipped row); CERT whether the client has a
    certificate to present; PHA whether it offers post-handshake auth.
    """
    rows = [_TABLE_HEADER]
    for r in results:
        rows.append(
            (
                r.name,
                r.tls or (f"({r.profile.tls})" if r.skipped and r.profile.tls else "-"),
                "yes" if r.profile.cert else "no",
                "yes" if r.profile.pha else "no",
                "yes" if r.cert_requested else "no",
                r.how or "-",
                str(r.status) if r.status is not None else "-",
                r.verified or "-",
                r.outcome,
                _short_note(r),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_HEADER) - 1)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def format_legend(results: Sequence[ProbeResult], clients: Iterable[Client] = CLIENTS) -> str:
    """What each client family of these results stands for, and how its behaviour is known."""
    seen: List[str] = []
    for r in results:
        if r.profile.family not in seen:
            seen.append(r.profile.family)
    by_id = {c.id: c for c in clients}
    lines = []
    for fam in seen:
        c = by_id.get(fam)
        if c is not None:
            lines.append(f"  {c.id}: {c.label}; {c.behaviour}")
    return ("clients:\n" + "\n".join(lines) + "\n") if lines else ""
