"""Rendering and patches: what apply and revert write into a vhost. Pure (text in, text out).

Every edit is one `Patch`: a splice of whole lines at exact offsets, so the
bytes around it never move; `plan_revert` undoes exactly what `plan_apply`
wrote, and refuses when the managed block is not what apply wrote.
"""

import re
from typing import Optional, Tuple

from . import apacheconf as ac
from .policy import (
    BEGIN_MARK, DEFAULT_PATTERN, DEFAULT_SNIPPET, END_MARK, Assessment, Block, PolicyError, _is_cn_location, _verifies,
)
from .records import dataclass


def _include_arg(path: str) -> str:
    return f'"{path}"' if re.search(r"\s", path) else path


def render_managed(indent: str, eol: str, final_eol: str, snippet: str = DEFAULT_SNIPPET, kept: str = "") -> str:
    """Our marked Include, indented like the block it replaces, in the file's line endings.

    ``kept``: the lines of the original block that are not client
    verification (comments between its directives, the rest of a
    ``<Location "/cn">``), verbatim, between the Include and the end marker.
    """
    if kept and not kept.endswith("\n"):
        kept += eol
    return (f"{indent}{BEGIN_MARK}{eol}{indent}Include {_include_arg(snippet)}{eol}"
            f"{kept}{indent}{END_MARK}{final_eol}")


def kept_lines(block: str) -> str:
    """What apply keeps of an original block: its comments, and a /cn Location's other directives.

    ``block`` is the exact text of a block (whole lines, complete sections).
    Blank lines and the client-verification nodes go; a ``<Location "/cn">``
    that holds more than the verification ``<If>`` (``SSLRenegBufferSize``)
    stays, without that ``<If>``.
    """
    out = []
    for node in ac.parse(block, "<block>").children:
        if isinstance(node, ac.Comment):
            out.append(node.render())
        elif isinstance(node, ac.Section) and _is_cn_location(node):
            rest = [c for c in node.children if not _verifies(c)]
            if any(not isinstance(c, (ac.Blank, ac.Comment)) for c in rest):
                out.append(node.open.raw + "".join(c.render() for c in rest) + (node.close.raw if node.close else ""))
    return "".join(out)


def render_target(pattern: str = DEFAULT_PATTERN, indent: str = "", eol: str = "\n", step: str = "    ") -> str:
    """The target block (the body of the policy snippet) for a browser pattern."""
    lines = [
        "SSLVerifyClient none",
        '<Location "/cn">',
        f'{step}<If "! ( %{{HTTP_USER_AGENT}} =~ /{pattern}/i )">',
        f"{step}{step}SSLVerifyClient optional",
        f"{step}</If>",
        "</Location>",
        "SSLVerifyDepth 10",
    ]
    return "".join(f"{indent}{ln}{eol}" for ln in lines)


@dataclass(frozen=True)
class Patch:
    """One splice of a file's text: replace text[start:end] (``old``) with ``new``."""

    filename: str
    start: int
    end: int
    old: str
    new: str
    first_line: int
    last_line: int

    def apply_to(self, text: str) -> str:
        if text[self.start:self.end] != self.old:
            raise PolicyError(f"{self.filename}:{self.first_line}: file changed since the patch was planned")
        return ac.splice(text, self.start, self.end, self.new)

    def apply_bytes(self, data: bytes) -> bytes:
        return ac.encode(self.apply_to(ac.decode(data)))


def _block_endings(text: str, block: Block) -> Tuple[str, str]:
    seg = text[block.start:block.end]
    first = seg.split("\n", 1)[0]
    eol = "\r\n" if first.endswith("\r") and "\n" in seg else ("\n" if "\n" in seg else ac.dominant_ending(text))
    final = "\r\n" if seg.endswith("\r\n") else ("\n" if seg.endswith("\n") else "")
    return eol, final


def plan_apply(text: str, assessment: Assessment, snippet: str = DEFAULT_SNIPPET, adopt: bool = False) -> Optional[Patch]:
    """The patch that makes the vhost include ``snippet``; None when it already does.

    * ``original``: the block is replaced by our marked Include (`render_managed`).
    * ``superseded`` (the target inline): nothing, unless ``adopt``: then the
      inline block is replaced like an original one (the TLS 1.2 opt-in and
      later edits then come from the policy file).
    * ``applied`` naming another file (the policy conffile itself, as older
      versions wrote it): only the Include line is changed to ``snippet``.

    Raises PolicyError for states that must not be touched (unrecognised, absent).
    """
    if assessment.state == "applied" and assessment.block is not None:
        return _plan_retarget(text, assessment.block, assessment.filename, snippet)
    if assessment.state == "superseded" and not adopt:
        return None
    if assessment.state not in ("original", "superseded") or assessment.block is None:
        raise PolicyError(assessment.reason or f"{assessment.filename}:{assessment.line}: no client-verification block to patch")
    b = assessment.block
    eol, final = _block_endings(text, b)
    old = text[b.start:b.end]
    new = render_managed(b.indent, eol, final, snippet, kept_lines(old))
    return Patch(assessment.filename, b.start, b.end, old, new, b.first_line, b.last_line)


def _plan_retarget(text: str, b: Block, filename: str, snippet: str) -> Optional[Patch]:
    """Point the managed Include at ``snippet`` (one line changed); None when it already names it."""
    if b.snippet == snippet:
        return None
    region = ac.parse(text[b.start:b.end], filename)
    inc = next(n for n in region.children if isinstance(n, ac.Directive) and n.key in ("include", "includeoptional"))
    start, end = b.start + inc.span.start, b.start + inc.span.end
    old = text[start:end]
    first = b.first_line + inc.span.first_line - 1
    new = f"{inc.line.indent}{inc.name} {_include_arg(snippet)}{inc.line.ending}"
    return Patch(filename, start, end, old, new, first, first + inc.span.last_line - inc.span.first_line)


def plan_revert(text: str, assessment: Assessment, original_block: str) -> Optional[Patch]:
    """The patch that puts the saved original block back in place of our managed block.

    None when the vhost is not in state ``applied`` and already holds the saved
    original (nothing to do); PolicyError when our block was damaged or absent.
    The managed block must be exactly what apply wrote for this original (its
    Include may name another file: older versions named the conffile);
    otherwise somebody edited it, and revert would overwrite their bytes.
    """
    if assessment.state != "applied" or assessment.block is None:
        if assessment.state in ("original", "superseded") and assessment.block is not None \
                and text[assessment.block.start:assessment.block.end] == original_block:
            return None
        raise PolicyError(
            (assessment.reason if assessment.state == "unrecognised" else None)
            or f"{assessment.filename}:{assessment.line}: the managed Include is not in the vhost (state {assessment.state_label}); "
            "it was removed or edited by hand, so there is nothing safe to revert"
        )
    b = assessment.block
    eol, final = _block_endings(text, b)
    current = text[b.start:b.end]
    written = {render_managed(b.indent, e, f, b.snippet or "", k)
               for e in (eol, "\n", "\r\n") for f in (final, "", eol) for k in (kept_lines(original_block), "")}
    if current not in written:
        raise PolicyError(f"{assessment.filename}:{b.first_line}-{b.last_line}: the managed block was edited by hand "
                          "(it is not what apply wrote); nothing safe to revert: compare it with the saved original")
    restored = original_block
    orig_final = "\r\n" if restored.endswith("\r\n") else ("\n" if restored.endswith("\n") else "")
    if final and not orig_final:  # lines were added after our block since: keep them on their own line
        restored += final
    return Patch(assessment.filename, b.start, b.end, current, restored, b.first_line, b.last_line)
