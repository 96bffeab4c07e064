"""The policy file: its contract, its live copy, and how both are described. Pure (bytes in, verdicts out).

The policy file (``/etc/dataone/apache2/cn-sslverify.conf``) is a dpkg
conffile: the administrator's, never written by this tool. What Apache loads
is its *live copy* (`paths.live_path`), written only by a transaction after the
file passed `check`, a config test, a reload and the live check. So an edit
that is refused, or that fails later, is never in a path Apache reads.

`check` is the contract, applied before anything is written. The file may
hold only (docs/policy.md):

* ``SSLVerifyClient none`` and ``SSLVerifyDepth N`` at vhost level;
* one ``<Location "/cn">`` holding one ``<If>`` on the User-Agent that holds
  ``SSLVerifyClient optional`` (and ``SSLRenegBufferSize N`` beside it);
* ``SSLProtocol`` that enables TLS 1.2 and/or 1.3 only (the TLS 1.2 opt-in);
* comments and blank lines.

and the ``<If>``'s pattern must exempt every browser of the client catalogue
(`clients.CLIENTS`) and no API client of it: checked by matching the real
User-Agents with the pattern, as Apache would (`uamatch`).
"""

import hashlib
import json
import os
import re
from typing import List, Optional, Sequence, Tuple

from . import apacheconf as ac
from .clients import API, BROWSER, CLIENTS, Client
from .paths import LIVE_NAME
from .policy import DEFAULT_SNIPPET, PACKAGE, PolicyError
from .uamatch import compile_ua_regex, parse_ua_condition

DEFAULT_LIVE = os.path.join(os.path.dirname(DEFAULT_SNIPPET), LIVE_NAME)

_PROTOCOL_TOKEN = re.compile(r"([+-]?)(all|SSLv3|TLSv1|TLSv1\.[0-3])", re.I)
_ALLOWED = ("SSLVerifyClient none, SSLVerifyDepth N, SSLProtocol (TLS 1.2/1.3 only), and one <Location \"/cn\"> "
            "holding one <If> on the User-Agent with SSLVerifyClient optional (SSLRenegBufferSize beside it)")


class ContractError(PolicyError):
    """The policy file breaks the contract; ``problems`` are ``file:line: why``, in file order."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _at(filename: str, node: ac.Node) -> str:
    s = node.span
    if isinstance(node, ac.Section):
        s = ac.Span(node.open.lineno, node.open.lineno, 0, 0)
    return f"{filename}:{s.first_line}" if s.first_line == s.last_line else f"{filename}:{s.first_line}-{s.last_line}"


def _is_int(args: List[str]) -> bool:
    return len(args) == 1 and args[0].isdigit()


def _touches_replication(node: ac.Node) -> bool:
    texts = [node.render()] if not isinstance(node, ac.Section) else [node.open.raw] + [
        n.render() for n in node.walk() if not isinstance(n, (ac.Section, ac.Comment))]
    return any("replicat" in t.lower() for t in texts)


def check(data: bytes, filename: str = DEFAULT_SNIPPET, clients: Sequence[Client] = CLIENTS) -> str:
    """The policy's browser pattern, if the file keeps the contract; ContractError (file:line each) if not.

    ConfigSyntaxError (file:line) when the file does not even parse.
    """
    tree = ac.parse(data, filename)
    problems: List[str] = []
    seen = {}
    pattern: Optional[str] = None
    locations = 0
    for node in tree.children:
        where = _at(filename, node)
        if isinstance(node, (ac.Blank, ac.Comment)):
            continue
        if _touches_replication(node):
            problems.append(f"{where}: touches replication: the policy may not change how replication "
                            "(SSLVerifyClient require in the vhost) verifies clients")
            continue
        if isinstance(node, ac.Directive):
            if node.key in seen:
                problems.append(f"{where}: {node.name} appears twice (first at line {seen[node.key]})")
                continue
            seen[node.key] = node.line.lineno
            if node.key == "sslverifyclient":
                if [a.lower() for a in node.args] != ["none"]:
                    problems.append(f"{where}: vhost-level `SSLVerifyClient {' '.join(node.args)}`: only `none` may be set "
                                    "for the whole vhost (clients are asked on /cn only, by the <If>)")
            elif node.key == "sslverifydepth":
                if not _is_int(node.args):
                    problems.append(f"{where}: SSLVerifyDepth {' '.join(node.args)}: expected one number >= 0")
            elif node.key == "sslprotocol":
                problems += _check_protocol(node, where)
            else:
                problems.append(f"{where}: `{node.name}` is outside the policy's contract (allowed: {_ALLOWED})")
            continue
        if isinstance(node, ac.Section) and node.key == "location" and [ac.unquote(a) for a in node.args] in (["/cn"], ["/cn/"]):
            locations += 1
            if locations > 1:
                problems.append(f"{where}: a second <Location {node.argstr}>: expected one")
                continue
            got, more = _check_cn_location(node, filename, clients)
            pattern = got if got is not None else pattern
            problems += more
            continue
        what = f"<{node.name} {node.argstr}>" if isinstance(node, ac.Section) else node.render().strip()
        problems.append(f"{where}: {what} is outside the policy's contract (only <Location \"/cn\"> may be set; "
                        f"allowed: {_ALLOWED})")
    if locations == 0 and not problems:
        problems.append(f"{filename}:1: no <Location \"/cn\"> with the User-Agent <If>: the policy file must hold it")
    if problems:
        raise ContractError(problems)
    assert pattern is not None
    return pattern


def _check_protocol(node: ac.Directive, where: str) -> List[str]:
    out = []
    for tok in node.args or [""]:
        m = _PROTOCOL_TOKEN.fullmatch(tok)
        if not m:
            out.append(f"{where}: SSLProtocol {tok!r}: expected [+-]all, [+-]TLSv1.2, [+-]TLSv1.3")
        elif m.group(1) != "-" and m.group(2).lower() in ("sslv3", "tlsv1", "tlsv1.0", "tlsv1.1"):
            out.append(f"{where}: SSLProtocol {tok}: the opt-in may enable TLS 1.2 and 1.3 only")
    return out


def _check_cn_location(loc: ac.Section, filename: str, clients: Sequence[Client]) -> Tuple[Optional[str], List[str]]:
    problems: List[str] = []
    pattern = None
    ifs = 0
    for c in loc.children:
        where = _at(filename, c)
        if isinstance(c, (ac.Blank, ac.Comment)):
            continue
        if isinstance(c, ac.Directive) and c.key == "sslrenegbuffersize" and _is_int(c.args):
            continue
        if isinstance(c, ac.Section) and c.key == "if":
            ifs += 1
            if ifs > 1:
                problems.append(f"{where}: a second <If> in <Location {loc.argstr}>: expected one")
                continue
            pattern, more = _check_if(c, filename, clients)
            problems += more
            continue
        what = f"<{c.name} {c.argstr}>" if isinstance(c, ac.Section) else c.render().strip()
        problems.append(f"{where}: {what} inside <Location {loc.argstr}> is outside the policy's contract "
                        "(expected one <If> on the User-Agent, and SSLRenegBufferSize N)")
    if ifs == 0:
        problems.append(f"{_at(filename, loc)}: <Location {loc.argstr}> holds no <If> on the User-Agent")
    return pattern, problems


def _check_if(node: ac.Section, filename: str, clients: Sequence[Client]) -> Tuple[Optional[str], List[str]]:
    where = _at(filename, node)
    cond = parse_ua_condition(node.argstr)
    body = [c for c in node.children if not isinstance(c, (ac.Blank, ac.Comment))]
    problems = []
    if len(body) != 1 or not isinstance(body[0], ac.Directive) or body[0].key != "sslverifyclient" \
            or [a.lower() for a in body[0].args] != ["optional"]:
        problems.append(f"{where}: <If {node.argstr}> must hold exactly `SSLVerifyClient optional`")
    if cond is None or not cond.negated:
        problems.append(f"{where}: <If {node.argstr}> is not `! (%{{HTTP_USER_AGENT}} =~ /browsers/i)` "
                        "(API clients are those NOT matching the browser pattern)")
        return None, problems
    if set(cond.flags) - {"i"}:
        problems.append(f"{where}: regex flags {cond.flags!r}: ap_expr knows only `i`")
        return None, problems
    try:
        rx = compile_ua_regex(cond)
    except re.error as exc:
        problems.append(f"{where}: /{cond.regex}/{cond.flags} cannot be checked against the client catalogue "
                        f"(Python's re, standing in for PCRE, rejects it: {exc}); write it with plain alternatives")
        return None, problems
    asked = [c for c in clients if c.kind == BROWSER and not rx.search(c.user_agent)]
    exempt = [c for c in clients if c.kind == API and rx.search(c.user_agent)]
    if asked:
        problems.append(f"{where}: /{cond.regex}/{cond.flags} does not match the browsers "
                        + ", ".join(f"{c.label} ({c.user_agent!r})" for c in _unique(asked))
                        + ": they would be asked for a certificate (keep windows|chrome|mozilla|safari|webkit)")
    if exempt:
        problems.append(f"{where}: /{cond.regex}/{cond.flags} matches the API clients "
                        + ", ".join(f"{c.label} ({c.user_agent!r})" for c in _unique(exempt))
                        + ": they could no longer authenticate with a certificate on /cn")
    return cond.regex, problems


def _unique(clients: Sequence[Client]) -> List[Client]:
    out: List[Client] = []
    for c in clients:
        if all(c.user_agent != o.user_agent for o in out):
            out.append(c)
    return out


# ---------------------------------------------------------------------------- the live copy


def _header(conffile: str, body: bytes, eol: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return (f"# Written by {PACKAGE} from {conffile} (sha256 {digest}) after a config test, a reload and the "
            f"live check. Do not edit: edit {conffile}, then run `{PACKAGE} apply`.{eol}").encode("latin-1")


def render_live(conffile: str, data: bytes) -> bytes:
    """The live copy of the policy file's bytes: one header line (with their sha256), then the file as it is."""
    return _header(conffile, data, "\r\n" if ac.dominant_ending(ac.decode(data)) == "\r\n" else "\n") + data


def live_source(conffile: str, live: bytes) -> Optional[bytes]:
    """The policy-file bytes a live copy was made from; None when it is not what `render_live` wrote.

    The header carries the body's sha256, so an edit of the live copy by hand
    is told from a copy of an older policy file without any record on disk.
    """
    first, nl, body = live.partition(b"\n")
    eol = "\r\n" if first.endswith(b"\r") else "\n"
    if nl and live.startswith(_header(conffile, body, eol)):
        return body
    return None


def rejected_reason(record: object, conffile: str, conf: bytes) -> Optional[str]:
    """The reason in a rejection record (`transaction`), if it is about exactly these bytes of this file."""
    if not isinstance(record, dict) or record.get("policy") != conffile:
        return None
    if record.get("sha256") != hashlib.sha256(conf).hexdigest():
        return None
    reason = record.get("reason")
    return str(reason) if reason else None


def status_line(conffile: str, conf: Optional[bytes], live: Optional[bytes], record: Optional[bytes]) -> str:
    """`describe`, given the rejection record's bytes (``rejected.json``, as read by the caller), if any."""
    rejected = None
    if conf is not None and record is not None:
        try:
            rejected = rejected_reason(json.loads(record.decode("utf-8")), conffile, conf)
        except ValueError:  # also UnicodeDecodeError
            rejected = None
    return describe(conffile, conf, live, rejected)


def describe(conffile: str, conf: Optional[bytes], live: Optional[bytes], rejected: Optional[str] = None) -> str:
    """One line for `status`: is the policy file what Apache loads?

    ``rejected``: why the last apply of exactly these bytes failed (configtest,
    live check), if it did; shown only, never used to decide anything.
    """
    if conf is None:
        return f"{conffile} is missing: reinstall {PACKAGE} (the live copy stays as it is)"
    try:
        check(conf, conffile)
        refusal = None
    except (PolicyError, ac.ConfigSyntaxError) as exc:
        refusal = str(exc)
    if live is None:
        return "not live yet: run apply" if refusal is None else f"not live; rejected: {refusal}"
    source = live_source(conffile, live)
    if source is None:
        return f"the live copy was edited by hand (not written by {PACKAGE}): run apply to replace it with {conffile}"
    if source == conf:
        return "live (Apache loads what the policy file says)"
    if refusal is not None:
        return f"edited, rejected: {refusal}"
    if rejected:
        return f"edited, rejected: {rejected}"
    return "edited, not live yet: run apply"


# ---------------------------------------------------------------------------- advice


#: The TLS 1.2 opt-in as one command line; works on every recognised shape (original, applied, and the
#: policy inline -- superseded -- which ``--adopt`` turns into the managed Include). ``{conffile}``: the policy file.
TLS12_OPT_IN = ("uncomment `SSLProtocol -all +TLSv1.2` in {conffile}, then run `" + PACKAGE + " apply --adopt` "
                "(config test, reload, live check; rolled back on failure; `" + PACKAGE + " revert` undoes it, "
                "giving back the vhost's own lines)")


def tls12_fix(state: str, conffile: str, vhost_file: str) -> str:
    """The fix text that turns the TLS 1.2 opt-in on for a CN vhost in ``state`` (for `check` and the gate)."""
    if state.startswith("original") or state in ("applied", "superseded"):
        return TLS12_OPT_IN.format(conffile=conffile)
    return (f"add `SSLProtocol -all +TLSv1.2` inside this vhost in {vhost_file}, "
            "then `apache2ctl configtest && apache2ctl graceful`")
