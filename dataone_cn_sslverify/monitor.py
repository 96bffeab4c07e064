"""``monitor``: one verdict for the CN's monitoring (Check_MK local check, Nagios plugin).

Why: the policy can stop being live without anybody running this tool --
``dpkg-reconfigure dataone-cn-os-core`` copies its template over the vhost
(no trigger fires), an operator restores an old copy, an edited snippet is
not live, an ``ssl.conf`` change makes TLS 1.3 negotiable again. The CNs
are watched by Check_MK/Nagios already; this module turns what can be
observed into the one line those read.

Pure: `judge` maps `Observations` (gathered by `monitor_observe` and, with
``--live``, `monitor_live`) to a `Verdict`; `format_checkmk` and
`format_nagios` render it. No I/O here, so every rule is a unit test.

Rules (the worst finding decides; CRIT > UNKNOWN > WARN > OK, as Check_MK
ranks states):

* CRIT -- the Apache configuration fails configtest; a Location that
  requires a certificate (replication) accepts a client without one (from
  the configuration, or measured with ``--live``); a change was interrupted
  and its journal is pending (or unreadable).
* UNKNOWN -- it cannot be told: no or several CN vhosts, an unrecognised
  block, the state dir unreadable, a run in progress, the live check could
  not reach the server.
* WARN -- drift: the vhost no longer carries the policy and the
  administrator did not opt out; the edited policy snippet is not live (or
  was rejected); a hazard ``check`` reports (TLS 1.3 negotiable against the
  policy's TLS 1.2 opt-in, HTTP/2, the renegotiation buffer, browsers asked);
  with ``--live``: a browser asked, or an API client that can be asked not
  asked.
* OK -- the policy is live as the conffile says (or the administrator
  disabled it: "disabled by the administrator").

Every non-OK text names the one command that fixes it.

The records are ``NamedTuple``s with evaluated annotations (no ``from
__future__ import annotations`` here): this module is imported every
minute, and dataclasses, or string annotations that ``NamedTuple``
compiles one by one, cost about 10 ms at each import.
"""

import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

PACKAGE = "dataone-cn-sslverify"
CMD = PACKAGE

OK, WARN, CRIT, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARN: "WARNING", CRIT: "CRITICAL", UNKNOWN: "UNKNOWN"}
#: Check_MK's ranking: a state further right in this tuple is worse.
_RANK = (OK, WARN, UNKNOWN, CRIT)

#: The Check_MK service name (no spaces: the local-check line is split on them).
SERVICE = "dataone-cn-sslverify"

#: The TLS 1.3 hazard that is the policy's documented trade-off unless the policy opts into TLS 1.2.
TLS13_HAZARD = "tls13-no-pha"
#: Hazards of `check` that the monitor reports (notes are never reported).
WARN_HAZARDS = (TLS13_HAZARD, "http2", "reneg-buffer", "browser-pattern")


class HazardSeen(NamedTuple):
    """A finding of `check` (``hazards.Hazard``), reduced to what the monitor shows."""

    id: str
    title: str
    where: str = ""
    fix: str = ""


class Replication(NamedTuple):
    """A Location that requires a client certificate, and whether a client without one gets in."""

    path: str
    where: str  # FILE:LINE of its `SSLVerifyClient require`
    open: bool
    by: str = ""  # FILE:LINE and directive that overrides it, when open
    by_file: str = ""


class LiveSeen(NamedTuple):
    """What ``--live`` measured (or read back from its cache)."""

    target: str = ""
    error: str = ""  # the server could not be reached: nothing else is known
    browsers_probed: int = 0
    browsers_asked: Tuple[str, ...] = ()
    api_probed: int = 0  # rows whose TLS stack can be asked (PHA on 1.3, renegotiation on 1.2)
    api_not_asked: Tuple[str, ...] = ()
    replication_open: Tuple[str, ...] = ()  # "PATH (STATUS)"
    tls13_despite_optin: bool = False  # a TLS 1.3 handshake succeeded although the policy opts into TLS 1.2
    age: float = 0.0  # seconds since it was measured (0: now)


class Observations(NamedTuple):
    """Everything the verdict depends on; each field is filled by one edge function."""

    # the vhost (locate + policy.assess)
    vhost_state: Optional[str] = None  # applied | superseded | original | unrecognised; None: none found
    vhost_label: str = ""  # e.g. "original:webkit-only"
    vhost_file: str = ""
    vhost_where: str = ""  # FILE:LINE of <VirtualHost>
    vhost_problem: str = ""  # why no single CN vhost could be judged
    applied_before: bool = False  # the state dir holds the original block we replaced (we applied it)
    # the administrator's opt-out
    optout: Optional[str] = None  # "disabled by the administrator (...)"
    # the policy snippet
    snippet_path: str = ""
    snippet: str = "n/a"  # live | edited | rejected | unknown | n/a
    snippet_detail: str = ""
    tls12_only_intended: bool = False  # the vhost's own SSLProtocol (the snippet's opt-in) excludes TLS 1.3
    # Apache's configuration
    config_ok: Optional[bool] = None
    config_error: str = ""
    config_broken_at: str = ""  # FILE:LINE Apache names
    hazards: Tuple[HazardSeen, ...] = ()
    replication: Tuple[Replication, ...] = ()
    browsers_asked: Optional[int] = None  # browser families asked on /cn, from the configuration
    browsers_total: int = 0
    api_asked: Optional[int] = None  # API client families asked on /cn, from the configuration
    api_total: int = 0
    # the state dir
    journal: str = "none"  # none | pending | corrupt | unknown
    journal_detail: str = ""
    busy: str = ""  # a run holds the lock: who
    state_problem: str = ""  # the state dir could not be read
    state_dir: str = ""
    as_root: bool = True  # the configtest and the state dir are root's: a failure as another user proves nothing
    state_untrusted: str = ""  # why the state dir is not ours alone (owner, mode): nothing in it was read
    # --live
    live: Optional[LiveSeen] = None


class Finding(NamedTuple):
    state: int
    text: str  # ends with the command that fixes it (non-OK)


class Metric(NamedTuple):
    name: str
    value: float
    warn: Optional[float] = None
    crit: Optional[float] = None


class Verdict(NamedTuple):
    state: int
    text: str
    findings: Tuple[Finding, ...] = ()
    metrics: Tuple[Metric, ...] = ()

    @property
    def name(self) -> str:
        return STATE_NAMES[self.state]

    def to_json(self) -> dict:
        return {"state": self.state, "status": self.name, "text": self.text,
                "findings": [{"state": STATE_NAMES[f.state], "text": f.text} for f in self.findings],
                "metrics": {m.name: m.value for m in self.metrics}}


def worst(states: Sequence[int]) -> int:
    return max(states, key=_RANK.index) if states else OK


def _fix(cmd: str) -> str:
    return f"run `{cmd}`"


# ----------------------------------------------------------------------------
# The rules


def _crit(o: Observations) -> List[Finding]:
    out = []
    if o.journal == "pending":
        out.append(Finding(CRIT, f"an interrupted change left its journal ({o.journal_detail}); "
                                 f"{_fix(CMD + ' status')} (it puts the previous configuration back)"))
    elif o.journal == "corrupt":
        out.append(Finding(CRIT, f"the journal is unreadable ({o.journal_detail}); look at it, then "
                                 f"{_fix(CMD + ' discard-journal')} (a copy is kept)"))
    if o.config_ok is False and o.as_root:
        at = o.config_broken_at
        if at and o.snippet_path and at.rsplit(":", 1)[0] == o.snippet_path:
            fix = f"correct {at} (the policy snippet), then {_fix(CMD + ' apply')}"
        else:
            fix = f"fix {at or 'the error Apache names'}, then {_fix('apache2ctl configtest')}"
        what = f"configuration broken by {at}" if at else "configuration fails configtest"
        out.append(Finding(CRIT, f"Apache {what} ({o.config_error or 'no reason given'}): a reload or restart "
                                 f"would fail; {fix}"))
    for r in o.replication:
        if r.open:
            out.append(Finding(CRIT, f"{r.path} ({r.where}) accepts a client without a certificate: "
                                     f"{r.by or 'overridden'}; {_replication_fix(o, r)}"))
    if o.live is not None:
        for p in o.live.replication_open:
            out.append(Finding(CRIT, f"live: {p} answered a client without a certificate; "
                                     f"{_fix(CMD + ' check')} to find what overrides its `SSLVerifyClient require`"))
    return out


def _replication_fix(o: Observations, r: Replication) -> str:
    if r.by_file and r.by_file == o.snippet_path:
        return f"remove it from the policy snippet {o.snippet_path}, then {_fix(CMD + ' apply')}"
    if r.by_file and r.by_file == o.vhost_file and o.vhost_state == "original":
        return _fix(CMD + " apply") + " (the policy leaves replication's require alone)"
    return f"remove it, then {_fix('apache2ctl configtest && apache2ctl graceful')}"


def _unknown(o: Observations) -> List[Finding]:
    out = []
    if o.busy:
        out.append(Finding(UNKNOWN, f"a {PACKAGE} run is in progress ({o.busy}); {_fix(CMD + ' status')} "
                                    "when it has finished"))
    if o.config_ok is False and not o.as_root:
        out.append(Finding(UNKNOWN, f"Apache's config test fails for this user ({o.config_error or 'no reason given'}); "
                                    f"Apache's files are root's: {_fix('sudo ' + CMD + ' monitor')}"))
    if o.state_problem:
        out.append(Finding(UNKNOWN, f"cannot read the state dir: {o.state_problem}; run it as root: "
                                    f"{_fix('sudo ' + CMD + ' monitor')}"))
    if o.state_untrusted:
        d = o.state_dir or "the state dir"
        out.append(Finding(UNKNOWN, f"{d} is not trusted ({o.state_untrusted}): its journal and records were not "
                                    f"read; if it is this tool's, {_fix(f'chown root:root {d} && chmod 0700 {d}')}"))
    if o.vhost_state is None or o.vhost_state == "unrecognised":
        why = o.vhost_problem or "no CN SSL vhost found"
        out.append(Finding(UNKNOWN, f"cannot tell whether the policy is live: {why}; {_fix(CMD + ' status')}"))
    if o.journal == "unknown":
        out.append(Finding(UNKNOWN, f"cannot read the journal ({o.journal_detail}); run it as root: "
                                    f"{_fix('sudo ' + CMD + ' monitor')}"))
    if o.live is not None and o.live.error:
        out.append(Finding(UNKNOWN, f"live check: cannot reach {o.live.target or 'the vhost'} ({o.live.error}); "
                                    f"{_fix(CMD + ' probe')}"))
    return out


def _warn(o: Observations) -> List[Finding]:
    out = []
    opted = o.optout is not None
    if o.vhost_state == "original" and not opted:
        if o.applied_before:
            out.append(Finding(WARN, f"drift: {o.vhost_where} no longer carries the policy ({o.vhost_label}; "
                                     "rewritten, e.g. by `dpkg-reconfigure dataone-cn-os-core`) and the administrator "
                                     f"did not opt out; {_fix(CMD + ' apply')}"))
        else:
            out.append(Finding(WARN, f"the policy is not applied to {o.vhost_where} ({o.vhost_label}) and the "
                                     f"administrator did not opt out; {_fix(CMD + ' apply')}"))
    if o.vhost_state == "applied" and not opted:
        if o.snippet == "edited":
            out.append(Finding(WARN, f"{o.snippet_path} edited, not live yet{_detail(o.snippet_detail)}; "
                                     f"{_fix(CMD + ' apply')}"))
        elif o.snippet == "rejected":
            out.append(Finding(WARN, f"{o.snippet_path} edited, rejected{_detail(o.snippet_detail)}: the previous "
                                     f"policy is live; correct it, then {_fix(CMD + ' apply')}"))
    judged = o.vhost_state in ("applied", "superseded") or (o.vhost_state == "original" and not opted)
    for h in o.hazards if judged else ():
        if h.id not in WARN_HAZARDS:
            continue
        if h.id == TLS13_HAZARD and not o.tls12_only_intended:
            continue  # the policy's documented trade-off (see `_ok_text`), not drift
        if h.id == "browser-pattern" and o.vhost_state == "original":
            continue  # said by the drift finding above
        if h.id == TLS13_HAZARD:
            text = (f"TLS 1.3 is negotiable although the policy opts into TLS 1.2 only ({h.where}): clients without "
                    f"post-handshake auth get 403 on /cn; find what re-enables it, then {_fix(CMD + ' check')}")
        else:
            text = f"{h.title}{' (' + h.where + ')' if h.where else ''}; fix: {h.fix}"
        out.append(Finding(WARN, text))
    if o.live is not None and not o.live.error:
        if o.live.browsers_asked and not opted:
            out.append(Finding(WARN, f"live: browsers asked for a certificate on /cn ({', '.join(o.live.browsers_asked)}); "
                                     f"{_fix(CMD + ' apply')}"))
        if o.live.tls13_despite_optin:
            out.append(Finding(WARN, f"live: a TLS 1.3 handshake with {o.live.target} succeeded although the policy "
                                     f"opts into TLS 1.2 only; find what re-enables it, then {_fix(CMD + ' check')}"))
        if o.live.api_not_asked and not opted:
            out.append(Finding(WARN, f"live: API clients not asked on /cn ({', '.join(o.live.api_not_asked)}); "
                                     f"{_fix(CMD + ' apply')}"))
    return out


def _detail(text: str) -> str:
    return f" ({text})" if text else ""


def _ok_text(o: Observations) -> str:
    if o.optout is not None and o.vhost_state != "applied":
        return f"{o.optout}: the policy is not managed on {o.vhost_where or 'this host'}; `{CMD} apply` manages it again"
    if o.vhost_state == "superseded":
        text = f"policy live: {o.vhost_where} carries it inline (superseded)"
    else:
        text = f"policy live as {o.snippet_path or 'the conffile'} says: {o.vhost_where} applied"
    if o.browsers_asked is not None and o.api_asked is not None:
        text += (f"; browsers asked on /cn: {o.browsers_asked} of {o.browsers_total} families, API clients asked: "
                 f"{o.api_asked} of {o.api_total}")
    if o.live is not None and not o.live.error:
        text += (f"; live{' (' + str(int(o.live.age)) + ' s ago)' if o.live.age >= 1 else ''}: "
                 f"{o.live.browsers_probed} browser rows not asked, {o.live.api_probed} API rows asked")
    if any(h.id == TLS13_HAZARD for h in o.hazards) and not o.tls12_only_intended:
        text += "; TLS 1.3 on: clients without post-handshake auth get 403 on /cn (known effect, see `check`)"
    return text


def judge(o: Observations) -> Verdict:
    """The verdict: the worst finding's text first (with its fix), the others after it."""
    findings = _crit(o) + _unknown(o) + _warn(o)
    state = worst([f.state for f in findings])
    if not findings:
        text = _ok_text(o)
    else:
        ordered = sorted(findings, key=lambda f: -_RANK.index(f.state))
        text = ordered[0].text
        if len(ordered) > 1:
            text += "; also: " + "; ".join(f"[{STATE_NAMES[f.state]}] {f.text}" for f in ordered[1:])
        findings = ordered
    return Verdict(state, text, tuple(findings), tuple(metrics(o)))


def metrics(o: Observations) -> List[Metric]:
    """Counts an operator can graph (live figures when measured, else the configuration's)."""
    out: List[Metric] = []
    if o.live is not None and not o.live.error:
        out.append(Metric("browsers_asked", len(o.live.browsers_asked), crit=1))
        out.append(Metric("api_asked", o.live.api_probed - len(o.live.api_not_asked)))
        out.append(Metric("replication_open", len(o.live.replication_open), crit=1))
        out.append(Metric("live_age", round(o.live.age)))
    else:
        if o.browsers_asked is not None:
            out.append(Metric("browsers_asked", o.browsers_asked))
        if o.api_asked is not None:
            out.append(Metric("api_asked", o.api_asked))
        if o.vhost_state not in (None, "unrecognised"):
            out.append(Metric("replication_open", sum(1 for r in o.replication if r.open), crit=1))
    return out


# ----------------------------------------------------------------------------
# Output formats

#: Control characters (C0, C1) and Unicode line separators become spaces; ``|`` (where perfdata begins) a slash.
_UNSAFE = dict.fromkeys([*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029], " ")
_UNSAFE[ord("|")] = "/"


def _clean(text: str) -> str:
    """One line without what either format reserves: line breaks of any kind, control characters, ``|``."""
    return text.translate(_UNSAFE).strip()


def _num(x: Optional[float]) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def format_checkmk(v: Verdict, service: str = SERVICE) -> str:
    """A Check_MK local-check line: ``<status> <service_name> <metrics> <text>``.

    Metrics are ``name=value;warn;crit`` joined by ``|`` (``-`` when none);
    the service name has no spaces.
    """
    assert service and not re.search(r"\s", service)
    perf = "|".join(f"{m.name}={_num(m.value)};{_num(m.warn)};{_num(m.crit)}".rstrip(";") for m in v.metrics) or "-"
    return f"{v.state} {service} {perf} {_clean(v.text)}\n"


def format_nagios(v: Verdict) -> str:
    """Monitoring-plugins output: ``STATUS - text | 'label'=value;warn;crit`` (the exit status is `Verdict.state`)."""
    perf = " ".join(f"{m.name}={_num(m.value)};{_num(m.warn)};{_num(m.crit)}".rstrip(";") for m in v.metrics)
    return f"{v.name} - {_clean(v.text)}" + (f" | {perf}" if perf else "") + "\n"
