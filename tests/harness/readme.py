"""The command lines the README shows, as argument vectors.

Why: the README is what operators copy from; a form it shows that the
parser rejects (``status --json`` once was one) is a bug. Tests take every
``dataone-cn-sslverify ...`` line out of the README's code blocks and run it.

A shown line may carry optional parts in brackets (``probe [--cert PEM
--key PEM] [--json]``), a trailing ``# comment`` and a shell redirection; each
line yields the form with every optional part and the form with none.
"""

import re
import shlex
from pathlib import Path
from typing import List, Tuple

PROG = "dataone-cn-sslverify"
README = Path(__file__).resolve().parents[2] / "README.md"

_FENCE = re.compile(r"^\s*```")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def code_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, text) of every line inside a fenced or 4-space-indented code block."""
    got: List[Tuple[int, str]] = []
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") or line.startswith("\t"):
            got.append((n, line.strip()))
    return got


def inline_spans(text: str) -> List[Tuple[int, str]]:
    """(line number, text) of every inline code span (`` `...` ``) outside code blocks."""
    blocks = {n for n, _ in code_lines(text)}
    return [(n, m.group(1)) for n, line in enumerate(text.splitlines(), 1) if n not in blocks
            for m in re.finditer(r"`([^`]+)`", line)]


def shown_commands(text: str) -> List[Tuple[int, str]]:
    """(line number, command line) of each code line or span that runs the command.

    ``sudo``, ``env VAR=...`` and ``$`` prompts in front are allowed.
    """
    got = []
    for n, line in code_lines(text) + inline_spans(text):
        bare = re.sub(r"^(\$\s+)?(sudo\s+)?(env\s+(\S+=\S*\s+)+)?", "", line)
        bare = re.sub(r"^\./%s-from-clone\b" % PROG, PROG, bare)  # the same command, run from a clone
        if bare.startswith(PROG + " ") or bare == PROG:
            got.append((n, bare))
    return sorted(got)


def argv_forms(line: str) -> List[List[str]]:
    """The argument vectors (without the program name) one shown line stands for."""
    forms = []
    for keep in (True, False):
        expanded = _OPTIONAL.sub((lambda m: m.group(1)) if keep else "", line)
        words = shlex.split(expanded, comments=True)
        argv: List[str] = []
        for w in words[1:]:
            if w in (">", ">>", "|", "2>&1", "&&", ";"):
                break
            argv.append(w)
        if argv not in forms:
            forms.append(argv)
    return forms


def readme_forms(path: Path = README) -> List[Tuple[str, List[str]]]:
    """("README.md:LINE", argv) for every form of every command line the README shows."""
    text = path.read_text(encoding="utf-8")
    return [("%s:%d" % (path.name, n), argv) for n, line in shown_commands(text) for argv in argv_forms(line)]
