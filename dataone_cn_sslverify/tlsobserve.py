"""What the probe sends and what it sees on the wire, interpreted (pure).

The live probe (`probe`) has two interchangeable backends -- Python's
``ssl`` message hook and ``openssl s_client -msg`` -- that observe the same
TLS handshake messages. This module turns what either of them observed
into `Event` values and decides, in one place, whether and how the server
asked for a client certificate (`classify`):

* before the handshake completed -> asked in the initial ``handshake``;
* after a server ``HelloRequest`` (TLS 1.2) -> asked in a ``renegotiation``;
* after the handshake under TLS 1.3 -> asked ``post-handshake`` (PHA);
* a ``HelloRequest`` the client refused -> ``renegotiation-refused``.

It also holds the pure counterparts of the effects: the HTTP request the
probe sends (`build_request`) and how the response is read
(`parse_http_response`), the ``openssl s_client`` command line
(`s_client_argv`) and how its output is read (`parse_s_client`,
`parse_msg_line`). No sockets, no subprocesses: everything here is a
function of its arguments.
"""

import re
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .clients import Profile
from .records import dataclass

__all__ = [
    "BACKENDS",
    "HOW_HANDSHAKE",
    "HOW_RENEGOTIATION",
    "HOW_POST_HANDSHAKE",
    "HOW_RENEGOTIATION_REFUSED",
    "Event",
    "Observation",
    "classify",
    "parse_msg_line",
    "parse_http_response",
    "build_request",
    "s_client_argv",
    "parse_s_client",
    "python_event",
    "norm_tls",
    "is_ip",
]

HOW_HANDSHAKE = "handshake"
HOW_RENEGOTIATION = "renegotiation"
HOW_POST_HANDSHAKE = "post-handshake"
# The server started a TLS 1.2 renegotiation (HelloRequest) to ask for a
# certificate and the client refused it (Apache: AH02261). The request never
# got an answer: this is IE11's "XMLHttpRequest: Network Error 0x4c7".
HOW_RENEGOTIATION_REFUSED = "renegotiation-refused"

#: The two interchangeable sources of observed messages (`probe`): Python's ssl hook, openssl s_client.
BACKENDS = ("python", "openssl")

# A Certificate handshake message carrying no certificate is 7 bytes (TLS 1.2)
# or 8 bytes plus the request context (TLS 1.3, context <= 255 bytes); any
# real X.509 certificate makes it far longer than this.
_EMPTY_CERTIFICATE_MAX = 4 + 1 + 255 + 3


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


def python_event(direction: str, content_type: Any, data: bytes) -> Optional[Event]:
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


def norm_tls(name: Optional[str]) -> Optional[str]:
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


def is_ip(name: str) -> bool:
    """An IPv4 or IPv6 address literal (brackets allowed)? (``socket.inet_pton``: no ipaddress import.)"""
    bare = name.strip("[]")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, bare)
            return True
        except (OSError, ValueError):
            continue
    return False


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
# openssl s_client: the command line and its output


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
    if server_name and not is_ip(server_name):
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
            argv += (["-verify_ip", server_name] if is_ip(server_name) else ["-verify_hostname", server_name])
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
    tls = finished[0] if finished else (norm_tls(m.group(1)) if m else None)
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
