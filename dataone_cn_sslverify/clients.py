"""The client catalogue: which clients the live probe imitates, and how.

The probe (`probe`) can only say something about real clients if each row
it plays is described by what that client's TLS stack does. This module is
that description, and nothing else (pure data and lookups, no I/O):

* `Profile`: one row to play -- User-Agent, whether it has a certificate to
  present, the pinned TLS version, whether it offers TLS 1.3 post-handshake
  auth (PHA), whether it accepts a server-initiated TLS 1.2 renegotiation.
* `Client` and `CLIENTS`: the client matrix. Each real client
  family (browsers, curl, python-requests, R httr, Java HttpClient, Go, the
  DataONE Java and Python clients) is described by what its TLS stack does
  -- the User-Agent it sends, whether it offers PHA, whether it accepts a
  renegotiation, the highest TLS version it speaks. `matrix_profiles` turns
  them into rows: each client x TLS version x with/without a certificate.
  Every row is therefore a *behavioural* profile; `Client.behaviour` says
  whether the behaviour was checked against the real binary
  (tests/integration/test_matrix.py runs real curl, requests, Java 17
  HttpClient and Go 1.19 clients against the harness) or taken from
  documentation.
* `BROWSER_USER_AGENTS`: more real browser User-Agent strings, by family,
  for the static ``check`` of the browser pattern.

This is the one catalogue: the live gate, ``check`` and the tests use it.
"""

import re
from typing import Iterable, List, Optional, Tuple

from .records import dataclass

__all__ = [
    "BROWSER",
    "API",
    "KINDS",
    "TLS_VERSIONS",
    "Profile",
    "get_profile",
    "Client",
    "CLIENTS",
    "get_client",
    "BROWSER_USER_AGENTS",
    "row_name",
    "matrix_profiles",
]

BROWSER = "browser"
API = "api"
KINDS = (BROWSER, API)
TLS_VERSIONS = ("1.2", "1.3")


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

#: The client families of the matrix. User-Agents are real ones.
CLIENTS: Tuple[Client, ...] = (
    Client("browser-ie11-win7", BROWSER, "Internet Explorer 11 on Windows 7", _UA_IE11_WIN7,
           "SChannel (Windows 7)", pha=False, renegotiation=False, max_tls="1.2",
           source="docs/facts.md: refuses the renegotiation, AH02261, XMLHttpRequest Network Error 0x4c7"),
    Client("browser-edge", BROWSER, "Microsoft Edge (Chromium) on Windows 10",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
           "BoringSSL", pha=False, renegotiation=True,
           validated="Chromium 156's TLS stack (Edge itself not run)",
           source="as browser-chrome: Edge is Chromium with another User-Agent"),
    Client("browser-chrome", BROWSER, "Google Chrome on Windows 10",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36",
           "BoringSSL", pha=False, renegotiation=True, validated="Chromium 156 (Debian 12, headless)",
           source="measured: TLS 1.3 403 (AH10158); a TLS 1.2 renegotiation first fails (AH02261) while "
                  "Chromium looks for a certificate, then it retries on a new connection and completes it"),
    Client("browser-firefox", BROWSER, "Mozilla Firefox on Linux",
           "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
           "NSS", pha=False, renegotiation=True, validated="Firefox ESR 153 (Debian 12, headless)",
           source="measured: post-handshake auth only with security.tls.enable_post_handshake_auth=true; "
                  "completes a TLS 1.2 renegotiation"),
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
           source="docs/facts.md: the CORS call fails with XMLHttpRequest: Network Error 0x4c7"),
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
           validated="Python 3.11 ssl", source="docs/facts.md"),
)


#: Real browser User-Agent strings, by family (more than the probed `CLIENTS` rows):
#: ``check`` reports every family the configured pattern does not exempt on /cn.
BROWSER_USER_AGENTS: Tuple[Tuple[str, str], ...] = (
    ("Internet Explorer 10 (Windows 7)", "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; WOW64; Trident/6.0)"),
    ("Internet Explorer 11 (Windows 7)", "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"),
    ("Internet Explorer 11 (Windows 10)", "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko"),
    ("Edge Legacy (EdgeHTML)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                               "Chrome/70.0.3538.102 Safari/537.36 Edge/18.18363"),
    ("Edge (Chromium)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91"),
    ("Chrome (Windows)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.0.0 Safari/537.36"),
    ("Chrome (macOS)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/120.0.0.0 Safari/537.36"),
    ("Chrome (Linux)", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/120.0.0.0 Safari/537.36"),
    ("Chrome (Android)", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.0.0 Mobile Safari/537.36"),
    ("Chrome (iOS)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                     "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1"),
    ("Firefox (Windows)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Firefox (macOS)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Firefox (Linux)", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Firefox (Android)", "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0"),
    ("Safari (macOS)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                       "Version/17.1 Safari/605.1.15"),
    ("Safari (iOS)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                     "Version/17.1 Mobile/15E148 Safari/604.1"),
    ("Safari (iPadOS)", "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                        "Version/17.1 Mobile/15E148 Safari/604.1"),
    ("Samsung Internet", "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"),
    ("Opera (Chromium)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0"),
    ("Opera Presto (legacy)", "Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18"),
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
    """The row called ``name`` (``<client>/<tls>/<cert|nocert>[/pha]``) of ``profiles`` or the full matrix (KeyError if none)."""
    for p in (profiles if profiles is not None else matrix_profiles()):
        if p.name == name:
            return p
    raise KeyError(name)
