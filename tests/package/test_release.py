"""`make release` (scripts/release): the gate, the signed upload files, the signed apt repository, and apt.

* The gate (``scripts/release_gate.py``, pure ``decide``; and the real script in a
  real git checkout): no publication unless the tree is clean, debian/changelog's
  top entry is released and the tag names exactly its version.
* The artifacts: the .changes, .dsc and .buildinfo signed (debsign) by the
  release key, the .changes' checksums those of the signed files; the
  repository (reprepro) with ``InRelease`` and ``Release.gpg`` that verify against the
  exported keyring alone, ``Packages`` whose hashes are the pool's, a binary
  OpenPGP keyring for ``signed-by=``.
* apt in a debootstrap chroot (``chroot.py``, one per suite) installs from that
  repository with ``Signed-By:`` its keyring, and **refuses** it when a
  ``Packages`` index was changed after signing or when another key signed it.

Under ``make release`` the artifacts are the release's own
(``$DATAONE_CN_SSLVERIFY_DEB``, ``$DATAONE_CN_SSLVERIFY_APT_REPO``); otherwise the
session's .deb is signed and published here with a throwaway key, by the same
scripts.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from debian.deb822 import Changes, Packages, Release

from dataone_cn_sslverify.records import dataclass

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for p in (HERE, REPO_ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import aptrepo  # noqa: E402
import chroot as C  # noqa: E402
import release_gate as G  # noqa: E402

OURS = "dataone-cn-sslverify"
SYSPATH = C.SYSTEM_PATH
SUITES = os.environ.get("DATAONE_CN_SSLVERIFY_LIFECYCLE_SUITES", "bookworm trixie").split()
REPO_SUITES = os.environ.get("DATAONE_CN_SSLVERIFY_APT_SUITES", "bookworm trixie").split()


# ----------------------------------------------------------------------------- the gate, pure

ENTRY = """dataone-cn-sslverify ({version}) {dist}; urgency=medium

  * A change.

 -- DataONE CN operations <ops@example.invalid>  Thu, 26 Nov 2026 17:30:00 +0000
"""
HEAD = "a" * 40


def facts(version: str = "0.2.0", dist: str = "bookworm", tag: Optional[str] = "v0.2.0",
          tag_commit: Optional[str] = HEAD, dirty: Optional[List[str]] = None) -> G.Facts:
    return G.Facts(ENTRY.format(version=version, dist=dist), tag, tag_commit, HEAD, dirty or [])


@pytest.mark.parametrize("version, tag", [("0.2.0", "v0.2.0"), ("0.1.0-1", "v0.1.0-1"), ("1.0~rc1", "v1.0_rc1"),
                                          ("1:2.0-1", "v1%2.0-1"), ("0.2.0+dfsg", "v0.2.0+dfsg")])
def test_gate_passes_a_tag_that_names_the_changelog_version(version: str, tag: str) -> None:
    rel = G.decide(facts(version=version, tag=tag))
    assert (rel.version, rel.tag, rel.distribution) == (version, tag, "bookworm")
    assert G.tag_for(version) == tag


@pytest.mark.parametrize("kw, reason", [
    (dict(dist="UNRELEASED"), "0.2.0 is UNRELEASED"),
    (dict(tag="v0.2.1"), "tag v0.2.1 names version 0.2.1 but debian/changelog says 0.2.0"),
    (dict(tag="v0.2"), "names version 0.2 but"),
    (dict(version="0.2.0-1"), "names version 0.2.0 but debian/changelog says 0.2.0-1"),
    (dict(tag=None), "no release tag on HEAD: tag it `git tag -s v0.2.0`"),
    (dict(tag="release-0.2.0"), "'release-0.2.0' is not a version tag (expected v0.2.0)"),
    (dict(tag_commit=None), "tag v0.2.0 does not exist"),
    (dict(tag_commit="b" * 40), "tag v0.2.0 points at bbbbbbbbbbbb, not at HEAD"),
    (dict(dirty=[" M debian/changelog", "?? notes.txt"]), "not clean (2 changed or untracked: debian/changelog, notes.txt)"),
])
def test_gate_refuses(kw: Dict[str, object], reason: str) -> None:
    with pytest.raises(G.Refused) as e:
        G.decide(facts(**kw))  # type: ignore[arg-type]
    assert reason in str(e.value)


def test_gate_lists_every_reason_and_names_a_broken_changelog() -> None:
    with pytest.raises(G.Refused) as e:
        G.decide(facts(dist="UNRELEASED", tag="v9", dirty=["?? x"]))
    assert len(str(e.value).splitlines()) == 3, str(e.value)
    with pytest.raises(G.Refused, match="debian/changelog: cannot parse"):
        G.decide(G.Facts("dataone-cn-sslverify 0.2.0 bookworm\n", "v0.2.0", HEAD, HEAD, []))


# ----------------------------------------------------------------------------- the gate, in a real checkout


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=Release Test", "-c", "user.email=rt@example.invalid",
                    "-c", "tag.gpgSign=false", "-c", "commit.gpgSign=false"] + list(args),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout of this tree (one commit), its changelog topped by 0.9.1 for bookworm."""
    repo = tmp_path / "checkout"
    subprocess.run(["sh", str(REPO_ROOT / "scripts" / "copy-tree"), str(REPO_ROOT), str(repo)], check=True)
    cl = repo / "debian" / "changelog"
    cl.write_text(ENTRY.format(version="0.9.1", dist="bookworm") + "\n" + cl.read_text())
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "release test")
    return repo


def release(repo: Path, *args: str, tag: Optional[str] = None) -> subprocess.CompletedProcess:
    env = {"PATH": SYSPATH, "HOME": "/root", "LC_ALL": "C.UTF-8"}
    if tag is not None:
        env["RELEASE_TAG"] = tag
    return subprocess.run(["sh", str(repo / "scripts" / "release")] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=120)


def test_release_check_passes_on_the_tagged_clean_checkout(checkout: Path) -> None:
    _git(checkout, "tag", "-a", "-m", "0.9.1", "v0.9.1")
    r = release(checkout, "--check")
    assert r.returncode == 0, r.stderr
    assert "version 0.9.1 (bookworm), tag v0.9.1, clean tree" in r.stderr


@pytest.mark.parametrize("case", ["unreleased", "tag-mismatch", "release-tag-mismatch", "untagged", "dirty",
                                  "tag-not-at-head"])
def test_release_refuses_before_building(checkout: Path, case: str) -> None:
    """The real `scripts/release` (not --check) exits 2 with the reason, and builds and publishes nothing."""
    tag: Optional[str] = None
    expect = ""
    if case == "unreleased":
        cl = checkout / "debian" / "changelog"
        cl.write_text(cl.read_text().replace("(0.9.1) bookworm;", "(0.9.1) UNRELEASED;", 1))
        _git(checkout, "commit", "-q", "-a", "-m", "unreleased")
        _git(checkout, "tag", "v0.9.1")
        expect = "debian/changelog: 0.9.1 is UNRELEASED"
    elif case == "tag-mismatch":
        _git(checkout, "tag", "v0.9.2")
        expect = "tag v0.9.2 names version 0.9.2 but debian/changelog says 0.9.1"
    elif case == "release-tag-mismatch":
        _git(checkout, "tag", "v0.9.1")
        _git(checkout, "tag", "v0.9.0")
        tag, expect = "v0.9.0", "tag v0.9.0 names version 0.9.0 but debian/changelog says 0.9.1"
    elif case == "untagged":
        expect = "no release tag on HEAD"
    elif case == "dirty":
        _git(checkout, "tag", "v0.9.1")
        (checkout / "README.md").write_text((checkout / "README.md").read_text() + "local edit\n")
        expect = "the work tree is not clean (1 changed or untracked: README.md)"
    elif case == "tag-not-at-head":
        _git(checkout, "tag", "v0.9.1")
        (checkout / "NEWS").write_text("after the tag\n")
        _git(checkout, "add", "NEWS")
        _git(checkout, "commit", "-q", "-m", "after the tag")
        tag, expect = "v0.9.1", "tag v0.9.1 points at"
    r = release(checkout, tag=tag)
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr}"
    assert f"release: refused: {expect}" in r.stderr, r.stderr
    assert not (checkout / "dist").exists(), "a refused release wrote dist/"


# ----------------------------------------------------------------------------- the key


def _release_key(tmp: Path, key: Optional[str], gnupghome: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = {"PATH": SYSPATH, "HOME": str(tmp), "LC_ALL": "C.UTF-8"}
    if key is not None:
        env["RELEASE_KEY"] = key
    if gnupghome is not None:
        env["GNUPGHOME"] = str(gnupghome)
    d = tmp / ("keydir-%d" % len(list(tmp.glob("keydir-*"))))
    d.mkdir()
    try:
        return subprocess.run(["sh", str(REPO_ROOT / "scripts" / "release-key"), str(d)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=env)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=dict(env, GNUPGHOME=str(d / "gnupg")),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_release_key_throwaway_file_and_keyring(tmp_path: Path) -> None:
    """Unset: a throwaway key in a new home, and it says so.  A secret key file: that key.  A key id: that
    key in the caller's GnuPG home.  A public key file or an unknown id: refused before anything is built."""
    signer = aptrepo.new_signer(tmp_path)
    try:
        env = signer.env()
        secret, public = tmp_path / "secret.asc", tmp_path / "public.asc"
        for path, what in ((secret, "--export-secret-keys"), (public, "--export")):
            p = subprocess.run(["gpg", "--batch", "--armor", what, signer.fpr], stdout=subprocess.PIPE, env=env)
            path.write_bytes(p.stdout)
        r = _release_key(tmp_path, None)
        assert r.returncode == 0 and "RELEASE_KEY_KIND=throwaway" in r.stdout and "THROWAWAY" in r.stderr, r
        assert "/.gnupg" not in r.stdout and f"GNUPGHOME='{tmp_path}/keydir-0/gnupg'" in r.stdout, r.stdout
        r = _release_key(tmp_path, str(secret))
        assert r.returncode == 0 and f"RELEASE_FPR={signer.fpr}\nRELEASE_KEY_KIND=file" in r.stdout, r
        assert "THROWAWAY" not in r.stderr
        r = _release_key(tmp_path, signer.fpr[-16:], gnupghome=signer.home)
        assert r.returncode == 0 and f"GNUPGHOME='{signer.home}'" in r.stdout and "KIND=keyring" in r.stdout, r
        r = _release_key(tmp_path, str(public))
        assert r.returncode == 2 and "holds 0 secret keys" in r.stderr, r
        r = _release_key(tmp_path, "0123456789ABCDEF", gnupghome=signer.home)
        assert r.returncode == 2 and "names 0 secret keys" in r.stderr, r
    finally:
        signer.close()


# ----------------------------------------------------------------------------- the artifacts


@dataclass
class Artifacts:
    repo: Path
    keyring: Path
    upload: Optional[Path]  #: the signed .changes (None: the .deb given has none next to it)
    version: str


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, our_deb: Path) -> Iterator[Artifacts]:
    """The release's repository (``make release``), or the session's .deb signed and published the same way."""
    version = C.deb_field(our_deb, "Version")
    changes = sorted(our_deb.parent.glob(f"{OURS}_{version.split(':', 1)[-1]}_*.changes"))  # no epoch in file names
    given = os.environ.get("DATAONE_CN_SSLVERIFY_APT_REPO")
    if given:
        repo = Path(given).resolve()
        yield Artifacts(repo, repo / aptrepo.KEYRING_NAME, changes[0] if changes else None, version)
        return
    out = tmp_path_factory.mktemp("release")
    upload_dir = out / "upload"
    shutil.copytree(str(our_deb.parent), str(upload_dir))
    signer = aptrepo.new_signer()
    try:
        upload = upload_dir / changes[0].name if changes else None
        if upload is not None:
            p = subprocess.run(["debsign", "--no-conf", f"-k{signer.fpr}", "--re-sign", str(upload)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=signer.env())
            assert p.returncode == 0, p.stdout.decode(errors="replace")
        repo = aptrepo.make_repo(out / "apt", [upload or our_deb], signer, REPO_SUITES)
        yield Artifacts(repo, repo / aptrepo.KEYRING_NAME, upload, version)
    finally:
        signer.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.package
def test_keyring_is_a_binary_openpgp_keyring(artifacts: Artifacts) -> None:
    """What ``signed-by=`` takes: binary OpenPGP packets (not armour, not a GnuPG keybox)."""
    assert aptrepo.is_binary_keyring(artifacts.keyring), artifacts.keyring.read_bytes()[:16]


@pytest.mark.package
@pytest.mark.parametrize("suite", REPO_SUITES)
def test_repository_is_signed_and_its_indexes_match_the_pool(artifacts: Artifacts, suite: str) -> None:
    d = artifacts.repo / "dists" / suite
    assert aptrepo.gpgv(artifacts.keyring, d / "InRelease"), "InRelease does not verify"
    assert aptrepo.gpgv(artifacts.keyring, d / "Release.gpg", d / "Release"), "Release.gpg does not verify"
    release = Release((d / "Release").read_text())
    assert (release["Codename"], release["Suite"]) == (suite, suite)
    listed = {e["name"]: e for e in release["SHA256"]}
    for arch in ("amd64", "arm64"):
        index = d / "main" / f"binary-{arch}" / "Packages"
        entry = listed[f"main/binary-{arch}/Packages"]
        assert (entry["sha256"], int(entry["size"])) == (_sha256(index), index.stat().st_size)
        ours = [p for p in Packages.iter_paragraphs(index.read_text(), use_apt_pkg=False) if p["Package"] == OURS]
        assert [p["Version"] for p in ours] == [artifacts.version]
        deb = artifacts.repo / ours[0]["Filename"]
        assert ours[0]["Filename"].startswith("pool/main/d/dataone-cn-sslverify/")
        assert ours[0]["SHA256"] == _sha256(deb)


@pytest.mark.package
def test_changes_dsc_and_buildinfo_are_signed_by_the_release_key(artifacts: Artifacts) -> None:
    """debsign: .dsc and .buildinfo signed first, the .changes then lists the signed files' checksums."""
    if artifacts.upload is None:
        pytest.skip("$DATAONE_CN_SSLVERIFY_DEB has no .changes next to it")
    assert aptrepo.gpgv(artifacts.keyring, artifacts.upload), f"{artifacts.upload.name}: bad or no signature"
    changes = Changes(artifacts.upload.read_text())
    files = changes["Checksums-Sha256"]
    names = [f["name"] for f in files]
    assert any(n.endswith(".dsc") for n in names) and any(n.endswith(".buildinfo") for n in names), names
    for f in files:
        path = artifacts.upload.parent / f["name"]
        assert (f["sha256"], int(f["size"])) == (_sha256(path), path.stat().st_size), f["name"]
        if f["name"].endswith((".dsc", ".buildinfo")):
            assert aptrepo.gpgv(artifacts.keyring, path), f"{f['name']}: bad or no signature"


# ----------------------------------------------------------------------------- apt in a chroot


@pytest.fixture(scope="module", params=SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ch(suite: str, artifacts: Artifacts, tmp_path: Path) -> Iterator[C.Chroot]:
    if not (artifacts.repo / "dists" / suite).is_dir():
        pytest.skip(f"the release repository has no suite {suite}")
    with C.Chroot(tmp_path, C.base_tree(suite)) as c:
        yield c


def _candidate(ch: C.Chroot, package: str) -> str:
    r = ch.check(["apt-cache", "policy", package])
    return next((line.split(":", 1)[1].strip() for line in r.stdout.splitlines()
                 if line.strip().startswith("Candidate:")), "(none)")


def _copy(repo: Path, dest: Path) -> Path:
    shutil.copytree(str(repo), str(dest))
    return dest


@pytest.mark.package
@pytest.mark.lifecycle
def test_apt_installs_from_the_release_repository_checking_its_signature(ch: C.Chroot, suite: str,
                                                                           artifacts: Artifacts) -> None:
    r = ch.use_repo(artifacts.repo)
    assert r.ok, r
    assert f"file:/srv/localrepo {suite} InRelease" in r.output, r
    sources = ch.read_bytes("/etc/apt/sources.list.d/localrepo.sources").decode()
    assert f"Signed-By: {C.KEYRING}" in sources and "trusted" not in sources.lower(), sources
    assert ch.read_bytes(C.KEYRING) == artifacts.keyring.read_bytes()
    assert _candidate(ch, OURS) == artifacts.version
    r = ch.apt("install", OURS)
    assert r.ok, r
    assert ch.dpkg_status(OURS) == f"install ok installed {artifacts.version}"


@pytest.mark.package
@pytest.mark.lifecycle
@pytest.mark.parametrize("how", ["added package", "changed dependency", "Release re-hashed"])
def test_apt_refuses_a_tampered_packages_index(ch: C.Chroot, suite: str, artifacts: Artifacts, tmp_path: Path,
                                               how: str) -> None:
    """Packages changed after signing (its .gz to match).  Left alone, Release's hashes no longer agree;
    re-hashed, Release and InRelease's text agree with it but no longer with their signatures.  Either way
    apt refuses the index and offers nothing from it.  Then the untouched copy works in the same chroot."""
    bad = _copy(artifacts.repo, tmp_path / "tampered")
    aptrepo.tamper_packages(bad, suite, b"evil-backdoor, " if how == "changed dependency" else b"",
                            rehash=how == "Release re-hashed")
    listed = {e["name"]: e["sha256"] for e in Release((bad / "dists" / suite / "Release").read_text())["SHA256"]}
    index = bad / "dists" / suite / "main" / "binary-amd64" / "Packages"
    assert (listed["main/binary-amd64/Packages"] == _sha256(index)) == (how == "Release re-hashed")
    r = ch.use_repo(bad)
    assert not r.ok, f"apt accepted a tampered Packages:\n{r}"
    if how == "Release re-hashed":
        # gpgv (Debian 12): BADSIG; sqv (Debian 13): "Message has been manipulated".
        assert "is not signed" in r.output and ("BADSIG" in r.output or "manipulated" in r.output), r
    else:
        assert "Hash Sum mismatch" in r.output or "unexpected size" in r.output, r
    assert _candidate(ch, OURS) == "(none)" and _candidate(ch, "evil") == "(none)"
    assert not ch.apt("install", OURS).ok
    r = ch.use_repo(artifacts.repo)
    assert r.ok and _candidate(ch, OURS) == artifacts.version, r


@pytest.mark.package
@pytest.mark.lifecycle
def test_apt_refuses_a_repository_signed_by_another_key(ch: C.Chroot, suite: str, artifacts: Artifacts,
                                                        our_deb: Path, tmp_path: Path) -> None:
    """The same package, a repository made and signed the same way but by another key: with Signed-By the
    release keyring, apt refuses it (the other key is not the one this source trusts)."""
    other = aptrepo.new_signer()
    try:
        repo = aptrepo.make_repo(tmp_path / "other", [our_deb], other, [suite])
    finally:
        other.close()
    assert aptrepo.gpgv(repo / aptrepo.KEYRING_NAME, repo / "dists" / suite / "InRelease")
    assert not aptrepo.gpgv(artifacts.keyring, repo / "dists" / suite / "InRelease")
    r = ch.use_repo(repo, keyring=artifacts.keyring)
    assert not r.ok, f"apt accepted a repository signed by another key:\n{r}"
    # gpgv (Debian 12): NO_PUBKEY; sqv (Debian 13): "Missing key FPR".
    assert "is not signed" in r.output and ("NO_PUBKEY" in r.output or "Missing key" in r.output), r
    assert _candidate(ch, OURS) == "(none)"
    assert not ch.apt("install", OURS).ok
    r = ch.use_repo(repo)  # its own key: the same bytes are accepted (the refusal was the key, not the repo)
    assert r.ok and _candidate(ch, OURS) == artifacts.version, r


# ----------------------------------------------------------------------------- CI


def test_ci_runs_the_makefile_targets() -> None:
    """.github/workflows/ci.yml: `make test` on every push, `make release` (after it) on a v* tag with
    RELEASE_TAG from the tag, dist/apt/ uploaded; every `make X` it runs is a target of the Makefile."""
    import re

    import yaml

    ci = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    on = ci.get("on", ci.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert on["push"]["tags"] == ["v*"] and "branches" in on["push"]
    jobs = ci["jobs"]
    runs = {name: "\n".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert re.search(r"^make test$", runs["test"], re.M)
    assert re.search(r"^\s*make release$", runs["release"], re.M)
    assert jobs["release"]["needs"] == "test" and jobs["release"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    release_env = next(s["env"] for s in jobs["release"]["steps"] if "make release" in s.get("run", ""))
    assert release_env["RELEASE_TAG"] == "${{ github.ref_name }}"
    uploads = [s["with"]["path"] for s in jobs["release"]["steps"] if s.get("uses", "").startswith("actions/upload")]
    assert "dist/apt/" in uploads
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in re.findall(r"^\s*make (\w[\w-]*)$", "\n".join(runs.values()), re.M):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"ci.yml runs `make {target}`: no such target"
