"""The apply gate and the presentation of probe results (pure).

A change is only right if, on the live server, browsers are never asked
for a client certificate on ``/cn`` while API clients still are (see
``cn-facts.md``). `gate_apply` turns a before/after pair of probed client
matrices into that verdict: no browser asked, and no API client that
worked before fails after. `verdict` is the older single-run gate. The
rest presents results: the fixed-width table and legend of the human
output, and the ``probe --json`` document (`results_to_json`, read back by
`results_from_json` for ``probe --compare`` and a saved before-matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .clients import API, BROWSER, CLIENTS, Client
from .results import ProbeResult
from .tlsobserve import HOW_RENEGOTIATION_REFUSED

__all__ = [
    "Verdict",
    "verdict",
    "gate_apply",
    "results_to_json",
    "results_from_json",
    "format_table",
    "format_legend",
]


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
