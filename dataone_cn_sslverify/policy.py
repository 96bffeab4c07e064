"""The client-verification policy: recognise the block, render the target, plan the patch.

Pure functions over `apacheconf` trees and text; no I/O. Everything the
transaction writes is decided here, so the whole decision can be tested
without a server.

Vocabulary (docs/design.md):

* *block*: the contiguous run of vhost-level nodes that decide whether a
  client is asked for a certificate on ``/cn``: ``SSLVerifyClient``,
  ``SSLVerifyDepth``, ``<If>``/``<ElseIf>``/``<Else>`` holding
  ``SSLVerifyClient``, and ``<Location "/cn">`` holding ``SSLVerifyClient``.
  Comments and blank lines *between* those nodes belong to the block;
  those before and after do not.
* *variant*: which historical shape the block has (docs/facts.md).
* *state*: ``original`` (a historical variant, to be patched), ``applied``
  (our marked Include), ``superseded`` (the target policy already inline),
  ``unrecognised`` (refused, with the reason), ``absent`` (an SSL vhost
  without any client-verification block: not a CN vhost).
"""

import re
from typing import Dict, List, Optional, Sequence, Tuple

from . import apacheconf as ac
from .errors import Refused
from .uamatch import UAMatch, parse_ua_condition
from .records import dataclass, field

PACKAGE = "dataone-cn-sslverify"
DEFAULT_SNIPPET = "/etc/dataone/apache2/cn-sslverify.conf"
BEGIN_MARK = f"# {PACKAGE}: begin (managed; `{PACKAGE} revert` restores the original)"
END_MARK = f"# {PACKAGE}: end"
_BEGIN_RE = re.compile(r"#\s*" + re.escape(PACKAGE) + r":\s*begin\b", re.I)
_END_RE = re.compile(r"#\s*" + re.escape(PACKAGE) + r":\s*end\b", re.I)

#: Words whose presence in a User-Agent marks a browser (docs/facts.md, "The change").
BROWSER_WORDS: Tuple[str, ...] = ("windows", "chrome", "mozilla", "safari", "webkit")
DEFAULT_PATTERN = "(" + "|".join(BROWSER_WORDS) + ")"

ORIGINAL_VARIANTS = ("plain-optional", "webkit-if-else", "webkit-only")
VARIANTS = ORIGINAL_VARIANTS + ("browser-list", "managed")

CN_PATHS = ("/cn", "/cn/")


class PolicyError(Refused, ValueError):
    """A block we will not touch; ``str()`` names file, lines and what was expected."""


# ----------------------------------------------------------------------------
# Recognition
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """The client-verification block of one vhost, as found in the file."""

    variant: str
    first_line: int
    last_line: int
    start: int  # char offset (== byte offset: latin-1)
    end: int
    indent: str
    pattern: Optional[str] = None  # the browser regex where the variant has one
    depth: Optional[str] = None
    snippet: Optional[str] = None  # managed: the path our Include names


@dataclass
class Assessment:
    """What a vhost holds and what can be done with it."""

    filename: str
    line: int  # line of <VirtualHost>
    server_name: Optional[str]
    addresses: List[str]
    state: str  # original | applied | superseded | unrecognised | absent
    variant: Optional[str] = None
    block: Optional[Block] = None
    reason: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def state_label(self) -> str:
        return f"original:{self.variant}" if self.state == "original" else self.state


def find_ssl_vhosts(tree: ac.Config) -> List[ac.Section]:
    """Every ``<VirtualHost>`` (at any depth, e.g. inside IfModule) with ``SSLEngine on``."""
    out = []
    for vh in ac.iter_sections(tree, "VirtualHost"):
        engines = [d for d in vh.walk() if isinstance(d, ac.Directive) and d.key == "sslengine"]
        if any(d.args and d.args[0].lower() in ("on", "optional") for d in engines):
            out.append(vh)
    return out


def _contains_verify(section: ac.Section) -> bool:
    return any(isinstance(n, ac.Directive) and n.key == "sslverifyclient" for n in section.walk())


def _verifies(node: ac.Node) -> bool:
    """Does this node set client verification (SSLVerifyClient/SSLVerifyDepth, itself or inside)?"""
    if isinstance(node, ac.Directive):
        return node.key in ("sslverifyclient", "sslverifydepth")
    if isinstance(node, ac.Section):
        return any(isinstance(n, ac.Directive) and n.key in ("sslverifyclient", "sslverifydepth") for n in node.walk())
    return False


def _is_cn_location(section: ac.Section) -> bool:
    return section.key == "location" and len(section.args) == 1 and section.args[0] in CN_PATHS


def _is_item(node: ac.Node) -> bool:
    """Does this vhost-level node take part in client verification for /cn?"""
    if isinstance(node, ac.Directive):
        return node.key in ("sslverifyclient", "sslverifydepth")
    if isinstance(node, ac.Section):
        if node.key in ("if", "elseif", "else"):
            return _contains_verify(node)
        if _is_cn_location(node):
            return _contains_verify(node)
    return False


def _is_begin(node: ac.Node) -> bool:
    return isinstance(node, ac.Comment) and bool(_BEGIN_RE.match(node.line.text))


def _is_end(node: ac.Node) -> bool:
    return isinstance(node, ac.Comment) and bool(_END_RE.match(node.line.text))


def _lines(nodes: Sequence[ac.Node]) -> str:
    spans = [n.span for n in nodes]
    if not spans:
        return "?"
    a, b = min(s.first_line for s in spans), max(s.last_line for s in spans)
    return f"{a}" if a == b else f"{a}-{b}"


def _runs(children: Sequence[ac.Node]) -> List[List[ac.Node]]:
    """Group items into runs separated by anything but blanks and comments."""
    runs: List[List[ac.Node]] = []
    current: List[ac.Node] = []  # items and the blanks/comments between them
    pending: List[ac.Node] = []
    for node in children:
        if _is_item(node):
            current.extend(pending)
            current.append(node)
            pending = []
        elif isinstance(node, (ac.Blank, ac.Comment)) and not (_is_begin(node) or _is_end(node)):
            if current:
                pending.append(node)
        else:
            if current:
                runs.append(current)
            current, pending = [], []
    if current:
        runs.append(current)
    return runs


def _mandatory_only(run: Sequence[ac.Node]) -> bool:
    """A run of plain directives that asks nobody *optionally*: only `require` and/or SSLVerifyDepth."""
    items = [n for n in run if not isinstance(n, (ac.Blank, ac.Comment))]
    if not items or not all(isinstance(n, ac.Directive) for n in items):
        return False
    return all(v == "require" for v in _verify_values(items))


def _verify_values(nodes: Sequence[ac.Node]) -> List[str]:
    return [(n.args[0].lower() if n.args else "") for n in nodes if isinstance(n, ac.Directive) and n.key == "sslverifyclient"]


def _only(section: ac.Section, value: str) -> bool:
    """Section holds exactly one SSLVerifyClient VALUE and nothing else but blanks/comments."""
    real = [c for c in section.children if not isinstance(c, (ac.Blank, ac.Comment))]
    return len(real) == 1 and _verify_values(real) == [value]


def classify_run(run: Sequence[ac.Node], filename: str) -> Tuple[str, Dict[str, Optional[str]]]:
    """Name the variant of one run, or raise PolicyError saying what was expected."""
    items = [n for n in run if not isinstance(n, (ac.Blank, ac.Comment))]
    where = f"{filename}:{_lines(items)}"
    directives = [n for n in items if isinstance(n, ac.Directive)]
    sections = [n for n in items if isinstance(n, ac.Section)]
    verify = _verify_values(directives)
    depths = [" ".join(d.args) for d in directives if d.key == "sslverifydepth"]
    if len(depths) > 1:
        raise PolicyError(f"{where}: SSLVerifyDepth appears {len(depths)} times in the client-verification block")
    depth = depths[0] if depths else None
    info: Dict[str, Optional[str]] = {"depth": depth, "pattern": None}

    if not sections:
        if verify == ["optional"]:
            return "plain-optional", info
        raise PolicyError(
            f"{where}: vhost-level SSLVerifyClient {' '.join(verify) or '(none)'} is not a known client-verification "
            "block (expected `SSLVerifyClient optional` + `SSLVerifyDepth`)"
        )

    keys = [s.key for s in sections]
    if keys == ["if", "else"] and not verify:
        cond = parse_ua_condition(sections[0].argstr)
        if cond is None:
            raise PolicyError(f"{where}: <If {sections[0].argstr}> is not a User-Agent match")
        words = cond.words or ()
        browsers_branch, api_branch = (sections[1], sections[0]) if cond.negated else (sections[0], sections[1])
        if set(words) <= {"webkit", "applewebkit"} and words and _only(browsers_branch, "none") and _only(api_branch, "optional"):
            info["pattern"] = cond.regex
            return "webkit-if-else", info
        raise PolicyError(
            f"{where}: <If>/<Else> on the User-Agent is not the known WebKit variant "
            "(expected WebKit → SSLVerifyClient none, else → optional)"
        )

    if keys == ["location"] and verify in ([], ["none"]):
        loc = sections[0]
        inner = [c for c in loc.children if not isinstance(c, (ac.Blank, ac.Comment))]
        verifying = [c for c in inner if _verifies(c)]
        if len(verifying) != 1 or not isinstance(verifying[0], ac.Section) or verifying[0].key != "if":
            raise PolicyError(
                f"{filename}:{_lines(verifying or [loc])}: <Location {loc.argstr}> sets client verification other than "
                "by one <If> (expected exactly one <If> on the User-Agent holding SSLVerifyClient optional; "
                "other directives such as SSLRenegBufferSize may stay beside it)"
            )
        cond_if = verifying[0]
        cond = parse_ua_condition(cond_if.argstr)
        if cond is None or not cond.negated or not _only(cond_if, "optional"):
            raise PolicyError(
                f"{filename}:{_lines([cond_if])}: <If {cond_if.argstr}> is not `! (User-Agent =~ /browsers/i)` "
                "holding only SSLVerifyClient optional"
            )
        words = cond.words
        info["pattern"] = cond.regex
        if words and set(words) <= {"webkit", "applewebkit"}:
            return "webkit-only", info
        if words and set(BROWSER_WORDS) <= set(words) and cond.case_insensitive:
            return "browser-list", info
        raise PolicyError(
            f"{filename}:{_lines([cond_if])}: User-Agent pattern /{cond.regex}/{cond.flags} is neither the WebKit-only "
            f"variant nor a case-insensitive browser list covering {', '.join(BROWSER_WORDS)}"
        )

    raise PolicyError(
        f"{where}: unrecognised client-verification block ({', '.join('<' + s.name + '>' for s in sections)} "
        f"with SSLVerifyClient {' '.join(verify) or '-'}); expected one of: {', '.join(ORIGINAL_VARIANTS)}"
    )


def _managed_block(children: Sequence[ac.Node], filename: str) -> Optional[Block]:
    """Find our marked Include among a vhost's children; PolicyError if it was damaged."""
    begins = [i for i, n in enumerate(children) if _is_begin(n)]
    ends = [i for i, n in enumerate(children) if _is_end(n)]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        marks = [children[i] for i in begins + ends]
        raise PolicyError(
            f"{filename}:{_lines(marks)}: the {PACKAGE} begin/end markers were edited by hand "
            "(expected exactly one begin and one end marker around one Include)"
        )
    b, e = begins[0], ends[0]
    inner = [n for n in children[b + 1:e] if not isinstance(n, (ac.Blank, ac.Comment))]
    includes = [n for n in inner if isinstance(n, ac.Directive) and n.key in ("include", "includeoptional")]
    kept_ok = all(isinstance(n, ac.Section) and _is_cn_location(n) and not _verifies(n) for n in inner if n not in includes)
    if len(includes) != 1 or len(includes[0].args) != 1 or inner[0] is not includes[0] or not kept_ok:
        raise PolicyError(
            f"{filename}:{_lines(children[b:e + 1])}: the managed block was edited by hand "
            "(expected only `Include <policy snippet>` between the markers, then the lines it kept from the original)"
        )
    first, last = children[b].span, children[e].span
    return Block(
        variant="managed", first_line=first.first_line, last_line=last.last_line, start=first.start, end=last.end,
        indent=children[b].line.indent, snippet=includes[0].args[0],
    )


def _server_name(vhost: ac.Section) -> Optional[str]:
    for d in vhost.directives("ServerName"):
        if d.args:
            return d.args[0]
    return None


#: Sections that only decide *whether* their content is read (not where it applies): a
#: block inside them is still a vhost-level block, e.g. `<IfModule mod_ssl.c>` in the vhost.
CONDITIONALS = ("ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection")


def _containers(vhost: ac.Section) -> List[ac.Section]:
    """The vhost and the conditional sections nested in it (recursively), in file order."""
    out = [vhost]
    for c in vhost.children:
        if isinstance(c, ac.Section) and c.key in CONDITIONALS:
            out.extend(_containers(c))
    return out


def assess_vhost(vhost: ac.Section, filename: str) -> Assessment:
    """Decide the state of one SSL vhost. Never raises: refusals carry a reason."""
    a = Assessment(filename=filename, line=vhost.open.lineno, server_name=_server_name(vhost), addresses=list(vhost.args), state="absent")
    containers = _containers(vhost)
    try:
        found = [m for m in (_managed_block(c.children, filename) for c in containers) if m is not None]
        if len(found) > 1:
            raise PolicyError(f"{filename}:{found[1].first_line}: the {PACKAGE} managed block appears "
                              f"{len(found)} times in one vhost (edited by hand?)")
    except PolicyError as exc:
        a.state, a.variant, a.reason = "unrecognised", None, str(exc)
        return a
    managed = found[0] if found else None
    runs = [run for c in containers for run in _runs(c.children)]
    # Vhost-level `SSLVerifyClient require` (or a lone SSLVerifyDepth) is another policy -- every
    # client must present a certificate -- not the /cn block this tool manages: an admin vhost
    # next to the CN must not make the CN ambiguous, nor be taken for it.
    others = [r for r in runs if _mandatory_only(r)]
    runs = [r for r in runs if not _mandatory_only(r)]
    for r in others:
        items = [n for n in r if not isinstance(n, (ac.Blank, ac.Comment))]
        note = (f"{filename}:{_lines(items)}: vhost-level {' + '.join(n.name + ' ' + ' '.join(n.args) for n in items)}"  # type: ignore[attr-defined]
                " is not a CN client-verification block; left alone")
        if runs or managed is not None:
            a.warnings.append(note)
        elif a.reason is None:
            a.reason = note
    if managed is not None:
        a.state, a.variant, a.block = "applied", "managed", managed
        for run in runs:
            items = [n for n in run if not isinstance(n, (ac.Blank, ac.Comment))]
            a.warnings.append(f"{filename}:{_lines(items)}: client-verification directive outside the managed block; it may override the policy")
        return a
    if not runs:
        nested = [n for n in vhost.walk() if isinstance(n, ac.Directive) and n.key == "sslverifyclient"]
        if a.reason is not None:
            return a
        if not nested:
            a.reason = f"{filename}:{a.line}: no client-verification block in this vhost"
        else:
            a.reason = f"{filename}:{a.line}: no vhost-level client-verification block (only per-location SSLVerifyClient)"
        return a
    if len(runs) > 1:
        a.state = "unrecognised"
        a.reason = (
            f"{filename}:{_lines(runs[0])}: client-verification directives are split into {len(runs)} places (lines "
            + ", ".join(_lines([n for n in r if not isinstance(n, (ac.Blank, ac.Comment))]) for r in runs)
            + "); expected one contiguous block"
        )
        return a
    run = runs[0]
    try:
        variant, info = classify_run(run, filename)
    except PolicyError as exc:
        a.state, a.reason = "unrecognised", str(exc)
        return a
    first, last = run[0].span, run[-1].span
    indent = run[0].line.indent if not isinstance(run[0], ac.Section) else run[0].open.indent  # type: ignore[attr-defined]
    a.variant = variant
    a.block = Block(variant=variant, first_line=first.first_line, last_line=last.last_line, start=first.start, end=last.end,
                    indent=indent, pattern=info.get("pattern"), depth=info.get("depth"))
    a.state = "superseded" if variant == "browser-list" else "original"
    return a


def assess(tree: ac.Config, filename: Optional[str] = None) -> List[Assessment]:
    """Assess every SSL vhost in a parsed file, in file order."""
    name = filename or tree.name
    return [assess_vhost(vh, name) for vh in find_ssl_vhosts(tree)]


def snippet_pattern(tree: ac.Config) -> str:
    """The browser regex of a policy snippet; PolicyError (file:line) if it is not the target shape."""
    runs = _runs(tree.children)
    if len(runs) != 1:
        raise PolicyError(f"{tree.name}:1: policy snippet must hold exactly one client-verification block, found {len(runs)}")
    variant, info = classify_run(runs[0], tree.name)
    if variant != "browser-list" or not info.get("pattern"):
        items = [n for n in runs[0] if not isinstance(n, (ac.Blank, ac.Comment))]
        raise PolicyError(f"{tree.name}:{_lines(items)}: policy snippet is {variant}, expected the browser-list target")
    return str(info["pattern"])


from .patching import (  # noqa: E402  (patching builds on the recognition above)
    Patch, kept_lines, plan_apply, plan_revert, render_managed, render_target,
)
from .textdiff import patch_diff, unified_diff  # noqa: E402

__all__ = (
    "Assessment", "Block", "PolicyError", "Patch", "UAMatch", "parse_ua_condition", "assess", "assess_vhost",
    "classify_run", "find_ssl_vhosts", "kept_lines", "plan_apply", "plan_revert", "render_managed", "render_target",
    "snippet_pattern", "patch_diff", "unified_diff",
)
