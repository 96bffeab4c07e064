"""Lossless model of an Apache httpd configuration file.

Why hand-written: no maintained Python library parses Apache configuration
*losslessly* (apacheconfig and certbot's augeas lens normalise whitespace,
drop comments or need a C library). This tool edits a production vhost it
does not own, so every byte it does not mean to change must come back
exactly: tabs, CRLF, trailing spaces, a missing final newline, non-UTF-8
bytes in comments.

The model follows what ``server/util.c`` (``ap_cfg_getline``) and
``server/config.c`` do in Apache 2.4:

* a physical line ends at ``\\n``; a line whose text ends with a single
  backslash right before the newline continues on the next one (also for
  comments: continuation happens before comment detection);
* a logical line whose first non-blank character is ``#`` is a comment;
* ``<Name args>`` opens a section, ``</Name>`` closes it (names are
  case-insensitive), anything else is a directive.

Text is decoded as ISO-8859-1, which maps every byte to one code point and
back, so ``render(parse(data)) == data`` holds for *every* byte string, and
edits are splices of the original text at exact offsets (see `splice`).
"""

import re
from typing import Iterator, List, Optional, Tuple, Union

from .errors import Refused
from .records import dataclass, field

ENCODING = "latin-1"


class ConfigSyntaxError(Refused, ValueError):
    """A structural error, reported as ``file:line: message`` like Apache does."""

    def __init__(self, filename: str, line: int, message: str) -> None:
        super().__init__(f"{filename}:{line}: {message}")
        self.filename = filename
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Span:
    """Where a node sits: 1-based inclusive line numbers, 0-based char offsets."""

    first_line: int
    last_line: int
    start: int
    end: int  # exclusive


@dataclass
class LogicalLine:
    """One logical line: one or more physical lines joined by continuations."""

    raw: str  # exact text, line ending(s) included
    lineno: int  # first physical line, 1-based
    offset: int  # char offset of raw in the file
    nlines: int  # physical lines covered

    @property
    def ending(self) -> str:
        """The line ending of the last physical line: '\\r\\n', '\\n' or ''."""
        if self.raw.endswith("\r\n"):
            return "\r\n"
        if self.raw.endswith("\n"):
            return "\n"
        return ""

    @property
    def indent(self) -> str:
        """Leading blanks of the first physical line."""
        m = re.match(r"[ \t]*", self.raw)
        return m.group(0) if m else ""

    @property
    def text(self) -> str:
        """Content with continuations joined and outer whitespace stripped."""
        return _CONTINUATION.sub("", self.raw).strip()

    @property
    def span(self) -> Span:
        return Span(self.lineno, self.lineno + self.nlines - 1, self.offset, self.offset + len(self.raw))


# backslash-newline, not preceded by another backslash (util.c: "[^\\]\\[\r]\n")
_CONTINUATION = re.compile(r"(?<!\\)\\\r?\n")


class Node:
    """Base of the tree. Every node knows its exact span in the file."""

    @property
    def span(self) -> Span:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Blank(Node):
    line: LogicalLine

    @property
    def span(self) -> Span:
        return self.line.span

    def render(self) -> str:
        return self.line.raw


@dataclass
class Comment(Node):
    line: LogicalLine

    @property
    def span(self) -> Span:
        return self.line.span

    @property
    def text(self) -> str:
        """The comment without its leading ``#`` and surrounding blanks."""
        return self.line.text[1:].strip()

    def render(self) -> str:
        return self.line.raw


@dataclass
class Directive(Node):
    line: LogicalLine
    name: str
    args: List[str]
    argstr: str  # arguments as written (joined logical line, after the name)

    @property
    def span(self) -> Span:
        return self.line.span

    @property
    def key(self) -> str:
        """Lower-cased name: Apache directive names are case-insensitive."""
        return self.name.lower()

    def render(self) -> str:
        return self.line.raw


@dataclass
class Section(Node):
    open: LogicalLine
    name: str
    args: List[str]
    argstr: str  # raw argument text between the name and '>'
    children: List[Node] = field(default_factory=list)
    close: Optional[LogicalLine] = None

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def span(self) -> Span:
        last = self.close if self.close is not None else self.open
        return Span(self.open.lineno, last.span.last_line, self.open.offset, last.offset + len(last.raw))

    def render(self) -> str:
        return self.open.raw + "".join(c.render() for c in self.children) + (self.close.raw if self.close else "")

    # -- queries -----------------------------------------------------------
    def directives(self, name: Optional[str] = None) -> Iterator[Directive]:
        """Direct child directives, optionally only those named ``name``."""
        for c in self.children:
            if isinstance(c, Directive) and (name is None or c.key == name.lower()):
                yield c

    def sections(self, name: Optional[str] = None) -> Iterator["Section"]:
        """Direct child sections, optionally only those named ``name``."""
        for c in self.children:
            if isinstance(c, Section) and (name is None or c.key == name.lower()):
                yield c

    def walk(self) -> Iterator[Node]:
        """Every descendant, depth first, in file order (iterative: no recursion limit)."""
        stack = [iter(self.children)]
        while stack:
            c = next(stack[-1], None)
            if c is None:
                stack.pop()
                continue
            yield c
            if isinstance(c, Section):
                stack.append(iter(c.children))


@dataclass
class Config(Section):
    """The root: a whole file. ``name`` is the file name used in messages."""

    @property
    def span(self) -> Span:
        text = self.render()
        return Span(1, text.count("\n") + 1, 0, len(text))


Item = Union[Blank, Comment, Directive, Section]


def _split_on_lf(text: str) -> List[str]:
    """Split after each '\\n' only: Apache does not end lines at a lone '\\r'."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _continues(physical: str) -> bool:
    body = physical[:-1] if physical.endswith("\n") else None
    if body is None:
        return False
    if body.endswith("\r"):
        body = body[:-1]
    return body.endswith("\\") and not body.endswith("\\\\")


def tokenize_args(argstr: str) -> List[str]:
    """Split arguments like ``ap_getword_conf``: quotes group, backslash escapes a quote."""
    args: List[str] = []
    i, n = 0, len(argstr)
    while i < n:
        while i < n and argstr[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        q = argstr[i]
        if q in "\"'":
            i += 1
            buf = []
            while i < n and argstr[i] != q:
                if argstr[i] == "\\" and i + 1 < n and argstr[i + 1] == q:
                    i += 1
                buf.append(argstr[i])
                i += 1
            i += 1  # closing quote (or end of text)
            args.append("".join(buf))
        else:
            j = i
            while j < n and argstr[j] not in " \t\r\n":
                j += 1
            args.append(argstr[i:j])
            i = j
    return args


_OPEN = re.compile(r"<\s*([^\s>/][^\s>]*)(.*)$", re.S)
_CLOSE = re.compile(r"</\s*([^\s>]+)\s*>$")


#: Deeper section nesting is refused with a file:line error (the tree's consumers recurse).
MAX_NESTING = 200


def parse(data: Union[bytes, str], filename: str = "<config>") -> Config:
    """Parse a whole file into a lossless tree.

    Raises ConfigSyntaxError (``file:line: message``) for structure Apache
    itself rejects: a section never closed, a close tag with no or the wrong
    opener, a section opener missing its ``>``.
    """
    text = data.decode(ENCODING) if isinstance(data, bytes) else data
    root = Config(open=LogicalLine("", 1, 0, 0), name=filename, args=[], argstr="")
    stack: List[Section] = [root]
    for ll in _logical_lines(text):
        t = ll.text
        if not t:
            node: Node = Blank(ll)
        elif t.startswith("#"):
            node = Comment(ll)
        elif t.startswith("</"):
            m = _CLOSE.match(t)
            if not m:
                raise ConfigSyntaxError(filename, ll.lineno, f"malformed closing tag {t!r}")
            name = m.group(1)
            top = stack[-1]
            if top is root:
                raise ConfigSyntaxError(filename, ll.lineno, f"</{name}> without matching <{name}> section")
            if top.key != name.lower():
                raise ConfigSyntaxError(
                    filename, ll.lineno,
                    f"</{name}> closes <{top.name}> opened at line {top.open.lineno}",
                )
            top.close = ll
            stack.pop()
            continue
        elif t.startswith("<"):
            m = _OPEN.match(t)
            if not m or not t.endswith(">"):
                raise ConfigSyntaxError(filename, ll.lineno, f"<{t[1:].split()[0] if t[1:].split() else ''}> section opening lacks '>'")
            name, rest = m.group(1), m.group(2)
            argstr = rest[:-1].strip() if rest.endswith(">") else rest.strip()
            sec = Section(open=ll, name=name, args=tokenize_args(argstr), argstr=argstr)
            if len(stack) > MAX_NESTING:
                raise ConfigSyntaxError(
                    filename, ll.lineno,
                    f"<{name}> sections nested more than {MAX_NESTING} deep; this tool does not edit such a file "
                    "(Apache may accept it, but no CN vhost is built like this)")
            stack[-1].children.append(sec)
            stack.append(sec)
            continue
        else:
            parts = t.split(None, 1)
            argstr = parts[1] if len(parts) > 1 else ""
            node = Directive(ll, parts[0], tokenize_args(argstr), argstr)
        stack[-1].children.append(node)
    if len(stack) > 1:
        top = stack[-1]
        raise ConfigSyntaxError(filename, top.open.lineno, f"<{top.name}> section is never closed (expected </{top.name}>)")
    return root


def _logical_lines(text: str) -> List[LogicalLine]:
    out: List[LogicalLine] = []
    physical = _split_on_lf(text)
    lineno, offset, i = 1, 0, 0
    while i < len(physical):
        start_i = i
        raw = physical[i]
        while _continues(physical[i]) and i + 1 < len(physical):
            i += 1
            raw += physical[i]
        i += 1
        out.append(LogicalLine(raw=raw, lineno=lineno, offset=offset, nlines=i - start_i))
        lineno += i - start_i
        offset += len(raw)
    return out


def render(tree: Node) -> str:
    """The exact text of a tree (str; use `render_bytes` for the file bytes)."""
    return tree.render()


def render_bytes(tree: Node) -> bytes:
    return tree.render().encode(ENCODING)


def decode(data: bytes) -> str:
    return data.decode(ENCODING)


def encode(text: str) -> bytes:
    return text.encode(ENCODING)


def splice(text: str, start: int, end: int, replacement: str) -> str:
    """Replace text[start:end]: the only way edits are made, so bytes elsewhere never move."""
    if not 0 <= start <= end <= len(text):
        raise ValueError(f"splice out of range: {start}:{end} of {len(text)}")
    return text[:start] + replacement + text[end:]


def dominant_ending(text: str) -> str:
    """The file's own line ending: CRLF if most lines use it, else LF."""
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    return "\r\n" if crlf > lf else "\n"


def unquote(arg: str) -> str:
    """Strip one pair of matching quotes (Apache accepts both styles)."""
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        return arg[1:-1]
    return arg


def ancestors_path(root: Section, target: Node) -> Optional[List[Section]]:
    """Sections from root down to (excluding) target, or None if absent."""
    for c in root.children:
        if c is target:
            return [root]
        if isinstance(c, Section):
            sub = ancestors_path(c, target)
            if sub is not None:
                return [root] + sub
    return None


def iter_sections(root: Section, name: str) -> Iterator[Section]:
    """Every section named ``name`` (case-insensitive) anywhere below root."""
    for n in root.walk():
        if isinstance(n, Section) and n.key == name.lower():
            yield n


__all__: Tuple[str, ...] = (
    "Blank", "Comment", "Config", "ConfigSyntaxError", "Directive", "LogicalLine", "Node", "Section",
    "Span", "ancestors_path", "decode", "dominant_ending", "encode", "iter_sections", "parse", "render",
    "render_bytes", "splice", "tokenize_args", "unquote",
)
