"""The server's side of one browser run: a request log with the TLS facts, and the error log's AH codes.

Why a second log: the vhost's own ``CustomLog ... combined`` says nothing
about TLS. ``GlobalLog`` (Apache >= 2.4.19) logs every request of every
vhost, the CN's included, without editing the vhost. Each line carries the
client's port, which the error log also names (``[client 127.0.0.1:PORT]``):
that ties each request to its connection's AH codes (AH02221 renegotiation
requested, AH02261 renegotiation failed, AH10129 post-handshake request,
AH10158 post-handshake authentication impossible).
"""

import re
from typing import Dict, List, Tuple

from dataone_cn_sslverify.records import dataclass, field

__all__ = ["RequestLine", "enable_request_log", "request_lines", "ah_codes_by_port", "AH_MEANING"]

_FIELDS = ("port", "protocol", "sni", "verify", "method", "path", "status", "origin", "user_agent")
_FORMAT = "\\t".join((
    "%{remote}p", "%{SSL_PROTOCOL}x", "%{SSL_TLS_SNI}x", "%{SSL_CLIENT_VERIFY}x",
    "%m", "%U", "%>s", "%{Origin}i", "%{User-Agent}i",
))
LOG_NAME = "tls-requests.log"

#: The mod_ssl messages that say whether and how a client was asked for a certificate.
AH_MEANING: Dict[str, str] = {
    "AH02255": "changed client verification type will force renegotiation",
    "AH02221": "requesting connection re-negotiation",
    "AH02226": "awaiting re-negotiation handshake",
    "AH02261": "re-negotiation handshake failed",
    "AH10129": "verify client post handshake",
    "AH10158": "cannot perform post-handshake authentication",
}

_CLIENT_RE = re.compile(r"\[client 127\.0\.0\.1:(\d+)\] (AH\d{5})")


@dataclass(frozen=True)
class RequestLine:
    """One request as Apache logged it (``-`` where mod_ssl had nothing to say)."""

    port: int
    protocol: str
    sni: str
    verify: str
    method: str
    path: str
    status: int
    origin: str
    user_agent: str
    ah: Tuple[str, ...] = field(default=())

    @property
    def asked(self) -> str:
        """How the server asked this connection for a certificate, from its own log ('' if it did not)."""
        if "AH10158" in self.ah:
            return "post-handshake impossible (AH10158)"
        if "AH10129" in self.ah:
            return "post-handshake"
        if "AH02261" in self.ah:
            return "renegotiation, failed (AH02261)"
        if "AH02221" in self.ah:
            return "renegotiation"
        return ""


def enable_request_log(inst) -> None:  # type: ignore[no-untyped-def]
    """Add the TLS request log to an (unstarted) harness instance, as its own conf-enabled file."""
    inst.enable_conf("tls-request-log", (
        "# Test only: one line per request with the TLS facts (see tests/harness/serverview.py)\n"
        'LogFormat "%s" tlsrequests\n'
        "GlobalLog ${APACHE_LOG_DIR}/%s tlsrequests\n" % (_FORMAT, LOG_NAME)
    ))


def ah_codes_by_port(error_log: str) -> Dict[int, Tuple[str, ...]]:
    """The AH codes of each client connection (by client port), in log order, without repeats."""
    out: Dict[int, List[str]] = {}
    for port, code in _CLIENT_RE.findall(error_log):
        codes = out.setdefault(int(port), [])
        if code not in codes:
            codes.append(code)
    return {p: tuple(c) for p, c in out.items()}


def request_lines(log_text: str, error_log: str = "") -> List[RequestLine]:
    """Parse the request log; each line gets the AH codes that ``error_log`` holds for its connection."""
    ah = ah_codes_by_port(error_log)
    lines = []
    for raw in log_text.splitlines():
        parts = raw.split("\t")
        if len(parts) != len(_FIELDS):
            continue
        d = dict(zip(_FIELDS, parts))
        port = int(d["port"])
        lines.append(RequestLine(
            port=port, protocol=d["protocol"], sni=d["sni"], verify=d["verify"], method=d["method"],
            path=d["path"], status=int(d["status"]), origin=d["origin"], user_agent=d["user_agent"],
            ah=tuple(c for c in ah.get(port, ()) if c in AH_MEANING),
        ))
    return lines
