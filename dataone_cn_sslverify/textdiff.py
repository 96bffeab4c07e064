"""Unified diffs of file texts: what `diff` prints and `apply` logs. Pure."""

import difflib
import re

from .patching import Patch


def unified_diff(path: str, old: str, new: str, context: int = 3) -> str:
    """A ``diff -u`` of two file texts, line endings shown as they are."""
    a = old.splitlines(keepends=True)
    b = new.splitlines(keepends=True)
    out = []
    for line in difflib.unified_diff(a, b, fromfile=path, tofile=path + " (patched)", n=context):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def patch_diff(path: str, text: str, patch: Patch, context: int = 3) -> str:
    """`unified_diff` of text before/after patch, computed only around the splice.

    The same output as diffing the whole files (a patch is one splice of whole
    lines, so one hunk), in time proportional to the block rather than to the
    file: difflib over a 100k-line vhost was the one superlinear cost
    (bench/RESULTS.md).
    """
    begin = patch.start  # the block starts at the beginning of a line
    for _ in range(context):
        if begin == 0:
            break
        begin = text.rfind("\n", 0, begin - 1) + 1
    end = patch.end
    for _ in range(context):
        if end >= len(text):
            break
        nl = text.find("\n", end)
        end = len(text) if nl < 0 else nl + 1
    skipped = text[:begin].count("\n")
    window = text[begin:end]
    changed = window[:patch.start - begin] + patch.new + window[patch.end - begin:]

    def shift(m: "re.Match[str]") -> str:
        return f"@@ -{int(m.group(1)) + skipped}{m.group(2)} +{int(m.group(3)) + skipped}{m.group(4)} @@"

    body = unified_diff(path, window, changed, context)
    return re.sub(r"^@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@", shift, body, count=1, flags=re.M)
