"""The .deb as the release pipeline builds it: `make deb` (debian/, dpkg-buildpackage) and stdeb.

What is checked:

* `scripts/build-deb` (what `make deb` runs) writes the .deb, a .sha256 per
  artifact, the .buildinfo and the .changes; the version comes from
  debian/changelog and agrees with ``dataone_cn_sslverify.__version__``;
* the package holds what docs/design.md names (the Python package, the command,
  the man page, the conffile, copyright, changelog) and nothing we must not
  ship (the state dir, byte-code);
* two builds with the same SOURCE_DATE_EPOCH are byte-identical, even from
  trees checked out at different times in different directories;
* ``setup.py bdist_deb`` (stdeb) builds an equivalent package, compared with
  python-debian's DebFile;
* lintian --pedantic on the .deb and the source: no error, no warning, no
  pedantic tag that is not overridden with a reason.

Every build runs from one snapshot of the work tree (scripts/copy-tree), so
that edits other people make while the suite runs cannot make the two
reproducibility builds differ, and nothing is written to the work tree.
The build tests are marked ``package`` (deselect: ``-m "not package"``);
the static checks at the top need no build and always run.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGE = "dataone-cn-sslverify"
CONFFILE = "/etc/dataone/apache2/cn-sslverify.conf"
TRIGGERS = [
    "interest-noawait /usr/share/dataone-cn-os-core/debian/cn-ssl.conf",  # dataone-cn-os-core's vhost template
    "interest-noawait dataone-cn-sslverify-reapply",  # ours, see maint.reapply_after_os_core
]
MAINT_SCRIPTS = ("postinst", "prerm", "postrm")


def _env() -> Dict[str, str]:
    """Debian's tools and interpreter first (pyenv's python3 breaks pybuild and stdeb)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV", "VIRTUAL_ENV"))}
    env["PATH"] = SYSPATH
    return env


def _changelog() -> Tuple[str, str, int]:
    """(version, upstream version, SOURCE_DATE_EPOCH) from debian/changelog."""
    def field(name: str) -> str:
        return subprocess.run(["dpkg-parsechangelog", "-l", str(ROOT / "debian" / "changelog"), "-S" + name],
                              env=_env(), stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    version = field("Version")
    return version, version.rsplit("-", 1)[0], int(field("Timestamp"))


def _calls_python(script: str) -> bool:
    """Does any line of code (not a comment) of a shell script mention python?"""
    code = [ln for ln in script.splitlines() if not ln.lstrip().startswith("#")]
    return any("python" in ln.lower() for ln in code)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Static checks (no build)
# ---------------------------------------------------------------------------


def test_python_version_matches_changelog() -> None:
    """``__version__`` is the upstream part of debian/changelog's version (build-deb refuses otherwise)."""
    from dataone_cn_sslverify import __version__

    version, upstream, _ = _changelog()
    assert __version__ == upstream, (f"dataone_cn_sslverify.__version__ is {__version__} but debian/changelog "
                                     f"says {version}: bump both")


def test_maintainer_scripts_are_thin_and_postrm_needs_no_python() -> None:
    """A few lines of sh each, #DEBHELPER# in each; postrm runs after our modules are gone."""
    for name in MAINT_SCRIPTS:
        text = (ROOT / "debian" / f"{PACKAGE}.{name}").read_text()
        assert text.startswith("#!/bin/sh\n"), name
        assert "#DEBHELPER#" in text, name
        assert "set -e" in text, name
        code = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert len(code) <= 25, f"{name} has {len(code)} lines of code: logic belongs in maint.py"
    assert not _calls_python((ROOT / "debian" / f"{PACKAGE}.postrm").read_text())
    for name in ("postinst", "prerm"):
        assert "-m dataone_cn_sslverify.maint " + name in (ROOT / "debian" / f"{PACKAGE}.{name}").read_text()


def test_manifest_ships_what_stdeb_needs() -> None:
    """stdeb only sees the sdist: every debian/ file it does not generate must be in MANIFEST.in."""
    manifest = (ROOT / "MANIFEST.in").read_text()
    stdeb_writes = {"control", "rules", "changelog", "compat", "watch", "source"}
    for f in sorted((ROOT / "debian").iterdir()):
        if f.name in stdeb_writes:
            continue
        assert f"include debian/{f.name}\n" in manifest, f"debian/{f.name} is not in MANIFEST.in"
    # stdeb creates debian/source/ itself and fails if the sdist already has it.
    assert "debian/source" not in manifest
    for f in ("conf/cn-sslverify.conf", "man/dataone-cn-sslverify.8", "README.md"):
        assert f"include {f}\n" in manifest


def test_man_page_documents_every_command() -> None:
    """The man page (section 8, written by hand) names every command and exit status of the CLI."""
    from dataone_cn_sslverify import cli

    page = (ROOT / "man" / "dataone-cn-sslverify.8").read_text()
    assert page.count(".TH DATAONE-CN-SSLVERIFY 8 ") == 1
    text = page.replace("\\-", "-")
    for command in cli.COMMANDS:
        assert re.search(r"^\.BI? %s\b" % re.escape(command), text, re.M), f"command {command} missing"
    for code in range(5):
        assert f".B {code}\n" in text, f"exit status {code} missing"
    _, upstream, _ = _changelog()
    assert f'"dataone-cn-sslverify {upstream}"' in page, "the .TH line names another version"


# ---------------------------------------------------------------------------
# Builds (session-scoped: each build runs once)
# ---------------------------------------------------------------------------


@dataclass
class Build:
    out: Path
    deb: Path
    log: str
    seconds: float


def _run_build(script: str, tree: Path, out: Path) -> Build:
    t0 = time.monotonic()
    p = subprocess.run(["sh", str(tree / "scripts" / script), "--out", str(out)], env=_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    log = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, f"{script} failed (exit {p.returncode}):\n{log[-6000:]}"
    deb = Path(p.stdout.decode().strip().splitlines()[-1])
    assert deb.is_file(), f"{script} printed {deb}, which does not exist"
    return Build(out, deb, log, time.monotonic() - t0)


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the work tree (what git tracks or would track), taken once per session."""
    tree = tmp_path_factory.mktemp("snapshot") / "src"
    subprocess.run(["sh", str(ROOT / "scripts" / "copy-tree"), str(ROOT), str(tree)], env=_env(), check=True)
    return tree


@pytest.fixture(scope="session")
def deb_build(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """`make deb`'s build (scripts/build-deb) of the snapshot."""
    return _run_build("build-deb", snapshot, tmp_path_factory.mktemp("deb-a"))


@pytest.fixture(scope="session")
def deb_build_again(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """A second build from another copy: other directory, every file's mtime set to now."""
    tree = tmp_path_factory.mktemp("snapshot-b") / "elsewhere" / "src"
    shutil.copytree(str(snapshot), str(tree), symlinks=True)
    now = time.time()
    for dirpath, dirnames, filenames in os.walk(str(tree)):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (now, now), follow_symlinks=False)
    return _run_build("build-deb", tree, tmp_path_factory.mktemp("deb-b"))


@pytest.fixture(scope="session")
def stdeb_build(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """``setup.py --command-packages=stdeb.command bdist_deb`` (scripts/build-stdeb) of the snapshot."""
    return _run_build("build-stdeb", snapshot, tmp_path_factory.mktemp("stdeb"))


# ---------------------------------------------------------------------------
# Reading a .deb with python-debian
# ---------------------------------------------------------------------------


@dataclass
class DebView:
    control: Dict[str, str]
    members: Dict[str, Tuple[str, int]]  # payload path -> (type+mode, size); type 'd', 'f' or 'l'
    files: Dict[str, bytes]  # payload path -> bytes, regular files only
    scripts: Dict[str, str]  # maintainer script name -> text
    conffiles: List[str]
    triggers: List[str]  # non-comment lines


def read_deb(path: Path) -> DebView:
    from debian.debfile import DebFile

    deb = DebFile(str(path))
    try:
        control_part = deb.control
        fields = {k: str(v) for k, v in control_part.debcontrol().items()}
        scripts = {}
        for name in MAINT_SCRIPTS + ("preinst",):
            if control_part.has_file(name):
                scripts[name] = control_part.get_content(name, encoding="utf-8")
        conffiles = (control_part.get_content("conffiles", encoding="utf-8").split()
                     if control_part.has_file("conffiles") else [])
        triggers = []
        if control_part.has_file("triggers"):
            triggers = [ln.strip() for ln in control_part.get_content("triggers", encoding="utf-8").splitlines()
                        if ln.strip() and not ln.lstrip().startswith("#")]
        members: Dict[str, Tuple[str, int]] = {}
        files: Dict[str, bytes] = {}
        tar = deb.data.tgz()
        for m in tar.getmembers():
            name = "/" + m.name.lstrip("./") if m.name not in (".", "./") else "/"
            kind = "d" if m.isdir() else "l" if m.issym() else "f"
            members[name] = (f"{kind}{m.mode & 0o7777:04o}", m.size)
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                files[name] = f.read()
        return DebView(fields, members, files, scripts, conffiles, triggers)
    finally:
        deb.close()


def depends_names(field: str) -> Dict[str, Set[str]]:
    """``a (>= 1), b:any`` -> {'a': {'>= 1'}, 'b': {''}}: package names with their version constraints."""
    from debian.deb822 import PkgRelation

    out: Dict[str, Set[str]] = {}
    for alternatives in PkgRelation.parse_relations(field):
        for rel in alternatives:
            constraint = " ".join(rel["version"]) if rel.get("version") else ""
            out.setdefault(rel["name"], set()).add(constraint)
    return out


# ---------------------------------------------------------------------------
# make deb: outputs, contents, reproducibility
# ---------------------------------------------------------------------------


@pytest.mark.package
def test_make_deb_writes_the_deb_checksums_buildinfo_and_changes(deb_build: Build) -> None:
    version, upstream, _ = _changelog()
    assert deb_build.deb.name == f"{PACKAGE}_{version}_all.deb"
    names = sorted(p.name for p in deb_build.out.iterdir())
    for suffix in (f"_{version}_all.deb", f"_{version}.dsc", f"_{upstream}.orig.tar.gz"):
        assert f"{PACKAGE}{suffix}" in names, names
    assert [n for n in names if n.endswith(".buildinfo")], names
    changes = [deb_build.out / n for n in names if n.endswith(".changes")]
    assert len(changes) == 1, names
    for name in names:
        if not name.endswith((".deb", ".dsc", ".tar.gz", ".tar.xz", ".buildinfo", ".changes")):
            continue  # the .sha256 files themselves, lintian.txt of `make lintian`
        sums = (deb_build.out / (name + ".sha256")).read_text().split()
        assert sums == [_sha256(deb_build.out / name), name], f"{name}.sha256 is wrong"
    # The .changes lists the .deb with its checksum (what the pipeline uploads).
    assert f"{_sha256(deb_build.deb)} {deb_build.deb.stat().st_size} {deb_build.deb.name}" in changes[0].read_text()
    print(f"build-deb took {deb_build.seconds:.1f}s")


@pytest.mark.package
def test_package_contents(deb_build: Build) -> None:
    v = read_deb(deb_build.deb)
    version, _, _ = _changelog()
    c = v.control
    assert (c["Package"], c["Version"], c["Architecture"]) == (PACKAGE, version, "all")
    deps = depends_names(c["Depends"])
    assert deps.get("apache2") == {">= 2.4"}, c["Depends"]
    assert ">= 3.8" in deps.get("python3", set()), c["Depends"]
    assert c.get("Enhances") == "dataone-cn-os-core"
    paths = set(v.members)
    for required in ("/usr/bin/dataone-cn-sslverify",
                     "/usr/lib/python3/dist-packages/dataone_cn_sslverify/__init__.py",
                     "/usr/lib/python3/dist-packages/dataone_cn_sslverify/maint.py",
                     "/usr/lib/python3/dist-packages/dataone_cn_sslverify/cli.py",
                     "/usr/share/man/man8/dataone-cn-sslverify.8.gz",
                     f"/usr/share/doc/{PACKAGE}/copyright",
                     f"/usr/share/doc/{PACKAGE}/changelog.Debian.gz",
                     CONFFILE):
        assert required in paths, f"{required} not in the package"
    # Every module of the source tree is shipped.
    for py in sorted((ROOT / "dataone_cn_sslverify").glob("*.py")):
        assert f"/usr/lib/python3/dist-packages/dataone_cn_sslverify/{py.name}" in paths
    assert v.members["/usr/bin/dataone-cn-sslverify"][0] == "f0755"
    assert v.files["/usr/bin/dataone-cn-sslverify"].startswith(b"#!/usr/bin/python3\n")
    # The snippet is a conffile with the bytes of conf/, not installed by setup.py into /usr.
    assert v.conffiles == [CONFFILE]
    assert v.files[CONFFILE] == (ROOT / "conf" / "cn-sslverify.conf").read_bytes()
    assert not [p for p in paths if p.endswith("cn-sslverify.conf") and p != CONFFILE]
    # Not shipped: the state dir (the tool creates it 0700), byte-code (py3compile makes it on install).
    assert not [p for p in paths if p.startswith("/var/")], sorted(paths)
    assert not [p for p in paths if p.endswith((".pyc", ".pyo")) or "__pycache__" in p]
    assert not [p for p in paths if p.startswith("/usr/local")]
    assert v.triggers == TRIGGERS
    man = gzip.decompress(v.files["/usr/share/man/man8/dataone-cn-sslverify.8.gz"]).decode()
    assert man.startswith(".\\\"") and ".TH DATAONE-CN-SSLVERIFY 8" in man
    # Maintainer scripts: ours plus debhelper's snippets, postrm without Python.
    assert "dataone_cn_sslverify.maint postinst" in v.scripts["postinst"]
    assert "py3compile" in v.scripts["postinst"]
    assert "dataone_cn_sslverify.maint prerm" in v.scripts["prerm"]
    assert not _calls_python(v.scripts["postrm"])
    assert "rm -rf \"$STATE_DIR\"" in v.scripts["postrm"]


@pytest.mark.package
def test_two_builds_are_byte_identical(deb_build: Build, deb_build_again: Build) -> None:
    """Same SOURCE_DATE_EPOCH (debian/changelog's), other directory, other mtimes: same .deb."""
    a, b = _sha256(deb_build.deb), _sha256(deb_build_again.deb)
    print(f"build A {a}\nbuild B {b}")
    if a != b:
        va, vb = read_deb(deb_build.deb), read_deb(deb_build_again.deb)
        diffs = [p for p in sorted(set(va.members) | set(vb.members))
                 if va.members.get(p) != vb.members.get(p) or va.files.get(p) != vb.files.get(p)]
        pytest.fail(f"the two builds differ: {a} vs {b}; payload differences: {diffs or 'none (metadata only)'}")
    # The source package too (orig tarball and debian.tar made reproducibly).
    for pattern in ("*.dsc", "*.orig.tar.gz"):
        (fa,), (fb,) = deb_build.out.glob(pattern), deb_build_again.out.glob(pattern)
        assert _sha256(fa) == _sha256(fb), f"{fa.name} differs between the builds"


# ---------------------------------------------------------------------------
# stdeb: an equivalent package
# ---------------------------------------------------------------------------

#: Payload paths whose *contents* may differ between the two builds (paths,
#: types and modes must still match):
CONTENT_MAY_DIFFER = {
    # stdeb writes its own one-entry changelog ("automatically created by stdeb").
    f"/usr/share/doc/{PACKAGE}/changelog.Debian.gz",
    # setuptools metadata: stdeb fills PKG-INFO from the same setup.py but
    # through an sdist; the Python code and the entry point are compared below.
    "/usr/lib/python3/dist-packages/dataone_cn_sslverify-{upstream}.egg-info/PKG-INFO",
}
#: Control fields that may differ, and why:
CONTROL_MAY_DIFFER = {
    "Depends",  # compared below as a set of package names and constraints (stdeb orders them differently)
    "Description",  # stdeb takes setup.py's description and the top of README.md, not debian/control's
    "Installed-Size",  # follows from the changelog and PKG-INFO sizes above
    "Homepage",  # stdeb writes setup.py's url ("None": there is no public home page; debian/control has none)
}


@pytest.mark.package
def test_stdeb_builds_an_equivalent_package(deb_build: Build, stdeb_build: Build) -> None:
    _, upstream, _ = _changelog()
    a, b = read_deb(deb_build.deb), read_deb(stdeb_build.deb)
    assert stdeb_build.deb.name == deb_build.deb.name
    # Control: same name, version, architecture, maintainer, section, Enhances ...
    for key in sorted((set(a.control) | set(b.control)) - CONTROL_MAY_DIFFER):
        assert a.control.get(key) == b.control.get(key), f"control field {key} differs"
    # ... and the same dependencies: package names and version constraints.
    assert depends_names(a.control["Depends"]) == depends_names(b.control["Depends"])
    # Payload: same paths with the same types and modes. There is no byte-code
    # to ignore: neither build ships .pyc (dh_python3 compiles on install).
    assert {p: m[0] for p, m in a.members.items()} == {p: m[0] for p, m in b.members.items()}
    # Contents of every file but the ones explained in CONTENT_MAY_DIFFER:
    # the Python modules, the command, the conffile, the man page, copyright.
    may_differ = {p.format(upstream=upstream) for p in CONTENT_MAY_DIFFER}
    differ = sorted(p for p in a.files if p not in may_differ and a.files[p] != b.files.get(p))
    assert not differ, f"files differ between the debian/ and the stdeb build: {differ}"
    # Conffiles, maintainer scripts (with debhelper's snippets) and triggers: identical.
    assert a.conffiles == b.conffiles == [CONFFILE]
    assert a.scripts == b.scripts
    assert a.triggers == b.triggers == TRIGGERS


# ---------------------------------------------------------------------------
# lintian
# ---------------------------------------------------------------------------


@pytest.mark.package
def test_lintian_clean(deb_build: Build) -> None:
    """scripts/run-lintian (`make lintian`): the .deb and the source, --pedantic, overrides justified."""
    changes = next(deb_build.out.glob("*.changes"))
    p = subprocess.run(["sh", str(ROOT / "scripts" / "run-lintian"), str(changes)], env=_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = p.stdout.decode("utf-8", "replace")
    print(out)
    tags = [ln for ln in out.splitlines() if re.match(r"^[EWP]: ", ln)]
    assert not tags, "lintian errors, warnings or unjustified pedantic tags:\n" + "\n".join(tags)
    assert p.returncode == 0, out
    # Both the binary and the source package were checked (the .changes of a full build lists the .dsc).
    assert re.search(r"^checked: .*\.dsc$", out, re.M) and re.search(r"^checked: .*_all\.deb$", out, re.M), out
    for override in ("debian/source/lintian-overrides", f"debian/{PACKAGE}.lintian-overrides"):
        for block in (ROOT / override).read_text().split("\n\n"):
            lines = [ln for ln in block.splitlines() if ln.strip()]
            for i, ln in enumerate(lines):
                if not ln.startswith("#"):
                    assert i > 0 and lines[i - 1].startswith("#"), f"{override}: override without a reason: {ln}"
