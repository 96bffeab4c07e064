"""What one probe saw (`ProbeResult`), assembled from a backend's observation (pure).

Both probe backends end in the same place: a list of `Event` values, the
negotiated TLS version, the response bytes and an error. `finish` turns
that into a `ProbeResult` -- was a certificate requested and how, the HTTP
status, whether the server verified the certificate, and what a failure
most likely means (`diagnose`). The gate (`gate`) and the presentation
judge these results; `probe` produces them. Keeping the type here lets
both sides use it without the pure modules importing the effect edge.

What the probe cannot see: whether the server *verified* a certificate is
only inferred (see `ProbeResult.verified`) unless the server echoes
``SSL_CLIENT_VERIFY`` in a response header (`VERIFY_HEADERS`).
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .clients import API, CLIENTS, Client, Profile
from .tlsobserve import HOW_RENEGOTIATION_REFUSED, Event, classify, parse_http_response
from .records import dataclass

__all__ = [
    "VERIFY_HEADERS",
    "ProbeResult",
    "skipped_result",
    "diagnose",
    "finish",
    "results_to_json",
    "results_from_json",
    "format_table",
    "format_legend",
]

# Response headers through which a test or production vhost may echo
# mod_ssl's SSL_CLIENT_VERIFY (e.g. ``Header set X-SSL-Client-Verify
# "%{SSL_CLIENT_VERIFY}s"``). Compared case-insensitively.
VERIFY_HEADERS = ("x-ssl-client-verify", "x-client-verify", "ssl-client-verify")


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


def skipped_result(profile: Profile, reason: str) -> ProbeResult:
    """A row that was not probed, and why."""
    return ProbeResult(profile=profile, skipped=reason)


def _same_words(alert: str, error: str) -> bool:
    """Does ``error`` already name ``alert`` ("unknown_ca" vs "tlsv1 alert unknown ca")?"""
    return alert.replace("_", " ").lower() in error.replace("_", " ").lower()


def finish(
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
# Presentation: the ``probe --json`` document and the human table


def results_to_json(results: Sequence[ProbeResult], verdict: Optional[Dict[str, Any]] = None,
                    **extra: Any) -> Dict[str, Any]:
    """``{"profiles": [...]}`` (plus ``"verdict"`` and ``extra`` keys when given), as ``probe --json`` prints."""
    doc: Dict[str, Any] = {"profiles": [r.to_json() for r in results]}
    if verdict is not None:
        doc["verdict"] = verdict
    doc.update(extra)
    return doc


def results_from_json(doc: Dict[str, Any]) -> List[ProbeResult]:
    """The results of a ``probe --json`` document (``{"profiles": [...]}``)."""
    rows = doc.get("profiles")
    if not isinstance(rows, list):
        raise ValueError("not a probe document: no \"profiles\" list")
    return [ProbeResult.from_json(r) for r in rows]


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
        return "instrument: answers a per-directory request so that it is visible"
    return r.error or ""


def format_table(results: Sequence[ProbeResult], names: Optional[Sequence[str]] = None) -> str:
    """A fixed-width table, one row per result, for the human output.

    PROFILE is the row's name (or ``names[i]``); TLS the negotiated version
    (the pinned one, in brackets, for a skipped row); CERT whether the client
    has a certificate to present; PHA whether it offers post-handshake auth.
    """
    rows = [_TABLE_HEADER]
    for i, r in enumerate(results):
        rows.append(
            (
                names[i] if names is not None else r.name,
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
