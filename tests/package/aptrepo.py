"""Signed apt repositories for the package tests, made by the release's own tools.

The lifecycle tests install with apt from a repository signed the way a
release is (``scripts/release-key`` for a throwaway key,
``scripts/make-apt-repo``: reprepro, signed ``InRelease`` and ``Release.gpg``,
the public key exported as a binary keyring), and apt inside the chroot
checks the signature against that keyring alone (``Signed-By:``), never
``trusted=yes``.  ``test_release.py`` uses the same helpers to show what apt
refuses: a tampered ``Packages``, a repository signed by another key.
"""

import atexit
import gzip
import hashlib
import lzma
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from dataone_cn_sslverify.records import dataclass

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
KEYRING_NAME = "dataone-cn-sslverify-archive-keyring.gpg"


class RepoError(RuntimeError):
    pass


def _run(argv: Sequence[str], env: Dict[str, str]) -> str:
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    if p.returncode != 0:
        raise RepoError(f"{' '.join(argv)} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout


@dataclass
class Signer:
    """A GnuPG home holding one signing key (its own directory, never ~/.gnupg)."""

    home: Path
    fpr: str
    dir: Path

    def env(self) -> Dict[str, str]:
        return {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "HOME": str(self.dir), "GNUPGHOME": str(self.home)}

    def close(self) -> None:
        """Stop this home's gpg-agent (started by the signing) and delete the home."""
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=self.env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(str(self.dir), ignore_errors=True)


def new_signer(parent: Optional[Path] = None, key_file: Optional[Path] = None) -> Signer:
    """A throwaway key (or the key in ``key_file``) through ``scripts/release-key``, in a new directory.

    A short path under /tmp by default: gpg-agent's socket lives in the home."""
    d = Path(tempfile.mkdtemp(prefix="aptkey-", dir=str(parent) if parent else None))
    env = {"PATH": SYSTEM_PATH, "HOME": str(d), "LC_ALL": "C.UTF-8"}
    if key_file is not None:
        env["RELEASE_KEY"] = str(key_file)
    out = _run(["sh", str(REPO_ROOT / "scripts" / "release-key"), str(d)], env)
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return Signer(Path(values["GNUPGHOME"].strip("'")), values["RELEASE_FPR"], d)


_SESSION: Optional[Signer] = None


def session_signer() -> Signer:
    """One throwaway key per test process (made on first use, deleted at exit)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = new_signer()
        atexit.register(_SESSION.close)
    return _SESSION


def make_repo(out: Path, files: Iterable[Path], signer: Signer, suites: Sequence[str]) -> Path:
    """``scripts/make-apt-repo``: a signed repository of ``files`` (.deb or .changes) in ``out`` (replaced)."""
    if out.exists():
        shutil.rmtree(str(out))
    _run(["sh", str(REPO_ROOT / "scripts" / "make-apt-repo"), "--out", str(out), "--key", signer.fpr,
          "--suites", " ".join(suites)] + [str(f) for f in files], signer.env())
    return out


def tamper_packages(repo: Path, suite: str, edit: bytes = b"", rehash: bool = False) -> None:
    """What an attacker between the repository and the CN does: change every ``Packages`` index of
    ``suite`` (and its compressed forms, consistently) without the key.  ``edit``: text inserted
    before each ``Depends:`` value (default: a package added).  ``rehash``: also put the new hashes
    and sizes into ``Release`` and into ``InRelease``'s signed text, keeping the old signatures."""
    changes: Dict[bytes, bytes] = {}
    for packages in (repo / "dists" / suite).glob("main/binary-*/Packages"):
        text = packages.read_bytes()
        tampered = text.replace(b"\nDepends: ", b"\nDepends: " + edit) if edit else text + \
            b"\nPackage: evil\nVersion: 1.0\nArchitecture: all\nFilename: pool/evil_1.0_all.deb\n" \
            b"Size: 1\nSHA256: " + b"0" * 64 + b"\nDescription: not from the release\n"
        assert tampered != text
        variants = [(packages, text, tampered)]
        for name, compress in (("Packages.gz", gzip.compress), ("Packages.xz", lzma.compress)):
            f = packages.parent / name
            if f.exists():
                variants.append((f, f.read_bytes(), compress(tampered)))
        for f, before, after in variants:
            f.write_bytes(after)
            for algo in ("md5", "sha1", "sha256"):
                changes[b" %s %d " % (hashlib.new(algo, before).hexdigest().encode(), len(before))] = \
                    b" %s %d " % (hashlib.new(algo, after).hexdigest().encode(), len(after))
    if rehash:
        for name in ("Release", "InRelease"):
            f = repo / "dists" / suite / name
            text = f.read_bytes()
            for old, new in changes.items():
                text = text.replace(old, new)
            f.write_bytes(text)


def is_binary_keyring(path: Path) -> bool:
    """An OpenPGP public key packet first (tag 6, old or new format), not armour, not a keybox."""
    head = path.read_bytes()[:1]
    if not head or not head[0] & 0x80:
        return False
    tag = head[0] & 0x3F if head[0] & 0x40 else (head[0] >> 2) & 0x0F
    return tag == 6


def gpgv(keyring: Path, *files: Path) -> bool:
    p = subprocess.run(["gpgv", "--keyring", str(keyring)] + [str(f) for f in files], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env={"PATH": SYSTEM_PATH, "HOME": "/nonexistent", "LC_ALL": "C"})
    return p.returncode == 0

