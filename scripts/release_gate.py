"""The release gate: may this checkout be published, and as which version?

``scripts/release`` runs it before it builds anything.  A release is
published only when

* debian/changelog's top entry is released (its distribution is not
  ``UNRELEASED``, the marker ``dch`` writes while an entry is being edited);
* a tag names the version, and it is the changelog's: ``v`` followed by the
  version with DEP-14's substitutions (``:`` -> ``%``, ``~`` -> ``_``), e.g.
  ``v0.2.0``, ``v1.0_rc1`` for 1.0~rc1, ``v1%2.0-1`` for 1:2.0-1.  The tag is
  ``$RELEASE_TAG`` (CI sets it from the pushed ref) or the one ``git describe
  --exact-match`` finds on HEAD; either way it must point at HEAD;
* the work tree is clean (no modified, staged or untracked file): what is
  built is exactly the tagged commit.

The version is read with python-debian's changelog parser, the one dpkg's
tools agree with.  The decision (``decide``) is pure; ``main`` gathers the
facts from git and the file.  Prints ``VERSION TAG DISTRIBUTION`` on success;
exits with ExitCode.REFUSED (2) and one line per reason otherwise.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from debian.changelog import Changelog, ChangelogParseError


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataone_cn_sslverify.errors import ExitCode  # noqa: E402
from dataone_cn_sslverify.records import dataclass  # noqa: E402


@dataclass
class Facts:
    """What the gate looks at (gathered by ``gather``; tests build them directly)."""

    changelog: str          #: the text of debian/changelog
    tag: Optional[str]      #: the release tag, None when there is none
    tag_commit: Optional[str]  #: the commit the tag points at (None: no such tag in the repository)
    head: str               #: the commit checked out
    dirty: List[str]        #: `git status --porcelain` lines


@dataclass
class Release:
    version: str
    distribution: str
    tag: str


class Refused(Exception):
    """The checkout must not be published; ``args[0]`` lists every reason."""


def tag_for(version: str) -> str:
    """The tag that names ``version`` (DEP-14: git refs cannot hold ``:`` or ``~``)."""
    return "v" + version.replace(":", "%").replace("~", "_")


def version_of_tag(tag: str) -> Optional[str]:
    """The Debian version a ``v...`` tag names, None for a tag of another form."""
    if not tag.startswith("v") or len(tag) < 2 or not tag[1].isdigit():
        return None
    return tag[1:].replace("%", ":").replace("_", "~")


def decide(facts: Facts) -> Release:
    """The release this checkout is, or ``Refused`` with every reason it is not."""
    reasons: List[str] = []
    try:
        block = next(iter(Changelog(facts.changelog, strict=True)))
        version, dists = str(block.version), block.distributions.strip()
    except (ChangelogParseError, StopIteration, ValueError) as e:
        raise Refused(f"debian/changelog: cannot parse its top entry: {e}")
    if dists.upper() == "UNRELEASED" or not dists:
        reasons.append(f"debian/changelog: {version} is UNRELEASED (finish the entry: dch --release)")
    if facts.tag is None:
        reasons.append(f"no release tag on HEAD: tag it `git tag -s {tag_for(version)}` or set RELEASE_TAG")
    else:
        named = version_of_tag(facts.tag)
        if named is None:
            reasons.append(f"tag {facts.tag!r} is not a version tag (expected {tag_for(version)})")
        elif named != version:
            reasons.append(f"tag {facts.tag} names version {named} but debian/changelog says {version}")
        if facts.tag_commit is None:
            reasons.append(f"tag {facts.tag} does not exist in this repository")
        elif facts.tag_commit != facts.head:
            reasons.append(f"tag {facts.tag} points at {facts.tag_commit[:12]}, not at HEAD ({facts.head[:12]})")
    if facts.dirty:
        shown = ", ".join(line[3:] for line in facts.dirty[:5]) + (" ..." if len(facts.dirty) > 5 else "")
        reasons.append(f"the work tree is not clean ({len(facts.dirty)} changed or untracked: {shown})")
    if reasons:
        raise Refused("\n".join(reasons))
    assert facts.tag is not None
    return Release(version, dists, facts.tag)


def _git(root: Path, *args: str) -> Optional[str]:
    """git's stdout, trailing newline removed (leading blanks are meaningful in --porcelain); None on failure."""
    p = subprocess.run(["git", "-C", str(root)] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    return p.stdout.rstrip("\n") if p.returncode == 0 else None


def gather(root: Path) -> Facts:
    """The facts from the checkout at ``root`` and the environment (``RELEASE_TAG``)."""
    head = _git(root, "rev-parse", "--verify", "HEAD^{commit}")
    if head is None:
        raise Refused(f"{root} is not a git checkout with a commit")
    tag = os.environ.get("RELEASE_TAG") or None
    if tag is None:
        tag = _git(root, "describe", "--exact-match", "--tags", "--match", "v[0-9]*", "HEAD")
    tag_commit = _git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}") if tag else None
    status = _git(root, "status", "--porcelain", "--untracked-files=all") or ""
    return Facts((root / "debian" / "changelog").read_text(encoding="utf-8"), tag, tag_commit, head,
                 [line for line in status.splitlines() if line.strip()])


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]).resolve() if args else ROOT
    try:
        rel = decide(gather(root))
    except Refused as e:
        for line in str(e).splitlines():
            print(f"release: refused: {line}", file=sys.stderr)
        return int(ExitCode.REFUSED)
    print(rel.version, rel.tag, rel.distribution)
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
