"""A User-Agent condition of an ``<If>``: parse the ap_expr, match it like Apache would.

Pure. Apache compiles ``/re/flags`` and ``m#re#flags`` with PCRE; the only
flag ap_expr knows is ``i`` (case-insensitive). Python's `re` stands in for
PCRE here: the two agree on the syntax browser patterns use (alternation,
groups, classes, quantifiers, anchors); where `re` cannot compile a pattern
the caller refuses it rather than guess (docs/policy.md).
"""

import re
from typing import Optional, Pattern, Tuple

from . import apacheconf as ac
from .records import dataclass


@dataclass(frozen=True)
class UAMatch:
    """A parsed ``<If>`` condition on the User-Agent."""

    negated: bool  # True: the condition holds for clients NOT matching the regex
    regex: str
    flags: str

    @property
    def words(self) -> Optional[Tuple[str, ...]]:
        """Alternatives of a plain ``a|b|c`` regex, lower-cased; None if not that simple."""
        body = self.regex
        m = re.fullmatch(r"\((?:\?:)?(.*)\)", body)
        if m:
            body = m.group(1)
        alts = body.split("|")
        if not all(re.fullmatch(r"[A-Za-z0-9_.-]+", a) for a in alts):
            return None
        return tuple(a.lower() for a in alts)

    @property
    def case_insensitive(self) -> bool:
        return "i" in self.flags


_UA_VAR = (
    r"(?:%\{\s*HTTP_USER_AGENT\s*\}"
    r"|%\{\s*HTTP:User-Agent\s*\}"
    r"|(?:req|http|req_novary)\(\s*['\"]User-Agent['\"]\s*\))"
)
_REGEX = r"(?:/(?P<re1>(?:[^/\\]|\\.)*)/(?P<f1>[a-z]*)|m(?P<d>[^\sA-Za-z0-9])(?P<re2>.*?)(?P=d)(?P<f2>[a-z]*))"
_MATCH_RE = re.compile(r"^\s*" + _UA_VAR + r"\s*(?P<op>=~|!~)\s*" + _REGEX + r"\s*$", re.I | re.S)


def parse_ua_condition(expr: str) -> Optional[UAMatch]:
    """Parse ``[!] [(] <User-Agent> =~|!~ /re/flags [)]`` with any spacing; None otherwise."""
    negated = False
    e = ac.unquote(expr.strip()).strip()
    while True:
        m = re.fullmatch(r"!\s*(.*)", e, re.S)
        if m:
            negated = not negated
            e = m.group(1).strip()
            continue
        m = re.fullmatch(r"\((.*)\)", e, re.S)
        if m and _balanced(m.group(1)):
            e = m.group(1).strip()
            continue
        break
    m = _MATCH_RE.match(e)
    if not m:
        return None
    if m.group("op") == "!~":
        negated = not negated
    regex = m.group("re1") if m.group("re1") is not None else m.group("re2")
    flags = m.group("f1") if m.group("f1") is not None else (m.group("f2") or "")
    return UAMatch(negated=negated, regex=regex, flags=flags)


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def compile_ua_regex(cond: UAMatch) -> Pattern[str]:
    """The condition's regex as Python's `re` reads it (``i`` -> IGNORECASE); re.error if it cannot.

    Approximation of PCRE (docs/policy.md): the syntax of alternatives, groups,
    classes, quantifiers and anchors is the same; PCRE-only constructs
    (``\\p{..}`` before Python 3.x, possessive quantifiers before 3.11,
    ``(?|..)``, ``\\K``) fail to compile here and are refused by the caller.
    """
    return re.compile(cond.regex, re.I if "i" in cond.flags else 0)
