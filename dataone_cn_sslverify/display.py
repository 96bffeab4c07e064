"""What a person reads: shell-quoted commands, escaped config text, bytes shown honestly.

Why one module: text from configuration files (a ``ServerName``, a path, a
directive) reaches the terminal in many messages. A raw escape sequence in
it can rewrite what the operator sees, and a command built by string
concatenation from a file name can run something else when pasted. Every
message meant for a person goes through `clean`, every command through
`command`.
"""

import re
import shlex
from typing import Iterable, List, Sequence

_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\e"}


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    """C0/C1 controls, DEL, and the bidi/format characters that reorder what a terminal shows."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069 \
        or code in (0x200E, 0x200F, 0x061C) or 0xDC80 <= code <= 0xDCFF


#: A UTF-8 sequence as config bytes look once decoded byte for byte (latin-1).
_BYTE_RUN = re.compile("[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _as_utf8(m: "re.Match[str]") -> str:
    try:
        return m.group(0).encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{ord(c):02x}" for c in m.group(0))


def escape(text: str, keep_newlines: bool = False) -> str:
    """text with every control character shown as an escape (``\\e``, ``\\x07``, ``\\u202e``).

    Config files are read byte for byte (latin-1), so a UTF-8 curly quote
    arrives here as three characters; it is shown as the one character it
    is; a byte that cannot be a character (0x80-0x9f) as ``\\xNN``.
    """
    text = _BYTE_RUN.sub(_as_utf8, text)
    return "".join(_escape_char(c) if _unsafe(c) and not (keep_newlines and c == "\n") else c for c in text)


def clean(text: str) -> str:
    """One line of human output: control characters escaped, tabs kept readable."""
    return escape(text)


def command(argv: Sequence[str]) -> str:
    """One shell command, every word quoted so that it runs exactly argv when pasted."""
    return " ".join(_ansi_c(a) if any(_unsafe(c) for c in a) else shlex.quote(a) for a in argv)


def _ansi_c(word: str) -> str:
    """bash's ``$'...'`` quoting: the only way to paste a control character exactly, and visibly.

    An unsafe character is written as the bytes it is on disk (UTF-8, or the
    original byte of an undecodable file name), so the locale does not matter.
    """
    out = []
    for c in word:
        if c in "\\'":
            out.append("\\" + c)
        elif _unsafe(c):
            raw = bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF else c.encode("utf-8")
            out.append("".join(f"\\x{b:02x}" for b in raw))
        else:
            out.append(c)
    return "$'" + "".join(out) + "'"


def commands(*cmds: Sequence[str], join: str = " && ") -> str:
    """Several commands chained (by default with ``&&``: the next runs only when one succeeded)."""
    return join.join(command(c) for c in cmds)


def show_bytes(data: bytes, at: int, context: int = 30) -> str:
    """A byte position in data as a person can read it: the line, UTF-8 decoded, with a caret under it.

    Bytes that are valid UTF-8 are shown as the characters they are (a
    curly quote is one ``’``, not ``â\\x80\\x99``); invalid bytes are shown
    as ``\\xNN``. Returns two lines: the text and the pointer.
    """
    at = max(0, min(at, len(data)))
    start = data.rfind(b"\n", 0, at) + 1
    end = data.find(b"\n", at)
    end = len(data) if end < 0 else end
    start = max(start, at - context * 4)
    end = min(end, at + context * 4)
    head = _decode_shown(data[start:at])
    tail = _decode_shown(data[at:end])
    return f"{head}{tail}\n{' ' * len(head)}^"


def _decode_shown(chunk: bytes) -> str:
    text = chunk.decode("utf-8", "backslashreplace")
    return escape(text)


def char_at(data: bytes, at: int) -> str:
    """The character at byte position at, named: ``'’' (U+2019, bytes e2 80 99)`` or ``byte 0x92 (not UTF-8)``."""
    for n in (1, 2, 3, 4):
        chunk = data[at:at + n]
        try:
            ch = chunk.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return f"{escape(ch)!r} (U+{ord(ch):04X}, bytes {' '.join('%02x' % b for b in chunk)})"
    return f"byte 0x{data[at]:02x} (not UTF-8)" if at < len(data) else "end of file"


_FILE_LINE = re.compile(r"(/[^\s:'\"]+):([0-9]+)")


def point_at_non_ascii(message: str, limit: int = 3) -> List[str]:
    """For each FILE:LINE a message names whose line holds non-ASCII bytes: where the first one is, shown.

    A curly quote pasted from a web page or a non-breaking space looks like
    ASCII in an editor and makes a directive mean something else; naming the
    character and pointing at it is what lets a person see it.
    """
    out: List[str] = []
    for path, num in _FILE_LINE.findall(message)[:limit]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        lines_ = data.split(b"\n")
        n = int(num)
        if not 1 <= n <= len(lines_):
            continue
        line = lines_[n - 1]
        at = next((i for i, b in enumerate(line) if b >= 0x80), None)
        if at is None:
            continue
        text, caret = show_bytes(line, at).split("\n")
        out += [f"{path}:{n}:{len(line[:at].decode('utf-8', 'replace')) + 1}: non-ASCII {char_at(line, at)}:",
                f"    {text}", f"    {caret}"]
    return out


def lines(items: Iterable[str]) -> str:
    return "\n".join(clean(i) for i in items)
