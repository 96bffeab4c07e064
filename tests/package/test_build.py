"""The .deb as the release pipeline builds it: `make deb` (debian/, dpkg-buildpackage), the plain tools, and stdeb.

What is checked:

* `scripts/build-deb` (what `make deb` runs) writes the .deb, a .sha256 per
  artifact, the .buildinfo and the .changes; the version comes from
  debian/changelog and agrees with ``dataone_cn_sslverify.__version__``;
* the package holds what docs/design.md names (the Python package, the command,
  the man page, the conffile, copyright, changelog) and nothing we must not
  ship (the state dir, byte-code);
* an application's layout: modules in /usr/share/dataone-cn-sslverify, the
  command in /usr/sbin, maintainer scripts that call the command, Depends
  without duplicates admitting Python 3.6, the PEP 517 build;
* the plain tools: ``dpkg-buildpackage -us -uc`` in a fresh clone, twice in
  a row in the same tree (a native source package);
* two builds with the same SOURCE_DATE_EPOCH are byte-identical: `make deb`'s
  and the plain build in a clone (other directory, other mtimes);
* ``setup.py bdist_deb`` (stdeb) builds an equivalent package, compared with
  python-debian's DebFile; what stdeb cannot express is listed and asserted;
* lintian --pedantic on the .deb and the source: no error, no warning, no
  pedantic tag that is not overridden with a reason; on stdeb's .deb and
  source no error and no warning.

Every build runs from one snapshot of the work tree (scripts/copy-tree), so
that edits other people make while the suite runs cannot make the two
reproducibility builds differ, and nothing is written to the work tree.
The build tests are marked ``package`` (deselect: ``-m "not package"``);
the static checks at the top need no build and always run.
"""

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from dataone_cn_sslverify.records import dataclass

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGE = "dataone-cn-sslverify"
CONFFILE = "/etc/dataone/apache2/cn-sslverify.conf"
PRIVATE = "/usr/share/dataone-cn-sslverify"  # the application's private module directory
COMMAND = "/usr/sbin/dataone-cn-sslverify"
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
    return version, version, int(field("Timestamp"))  # native: the version is the upstream version


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
    for name in MAINT_SCRIPTS:  # the command, never an interpreter by its path
        assert not _calls_python((ROOT / "debian" / f"{PACKAGE}.{name}").read_text()), name
    for name in ("postinst", "prerm"):
        assert f'{PACKAGE} maintscript {name} "$@"' in (ROOT / "debian" / f"{PACKAGE}.{name}").read_text()


def test_source_package_is_native_with_an_application_layout() -> None:
    """3.0 (native), a version without revision, PEP 517 with setuptools, Depends from ${python3:Depends}."""
    from debian.deb822 import Deb822

    assert (ROOT / "debian" / "source" / "format").read_text().strip() == "3.0 (native)"
    version, _, _ = _changelog()
    assert "-" not in version
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'build-backend = "setuptools.build_meta"' in pyproject
    source, binary = list(Deb822.iter_paragraphs((ROOT / "debian" / "control").read_text()))[:2]
    assert "pybuild-plugin-pyproject" in source["Build-Depends"]
    assert source["X-Python3-Version"] == ">= 3.6"
    names = [rel.split("(")[0].strip() for rel in binary["Depends"].replace("\n", " ").split(",") if rel.strip()]
    assert len(names) == len(set(names)), binary["Depends"]
    assert "python3" not in names and "${python3:Depends}" in names, "python3 comes from ${python3:Depends} only"
    rules = (ROOT / "debian" / "rules").read_text()
    assert "PYBUILD_INSTALL_DIR = /usr/share/dataone-cn-sslverify" in rules
    assert "PYBUILD_SYSTEM = pyproject" in rules
    assert f"sbin/{PACKAGE} usr/sbin/" in (ROOT / "debian" / f"{PACKAGE}.install").read_text()
    # stdeb.cfg: one line per value (no continuation lines that stdeb would turn into fields).
    for n, line in enumerate((ROOT / "stdeb.cfg").read_text().splitlines(), 1):
        assert not (line[:1].isspace() and line.strip()), f"stdeb.cfg:{n}: continuation line"


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


@dataclass
class PlainBuilds:
    tree: Path
    debs: List[Path]  # the .deb of each run, copied aside
    logs: List[str]
    leftovers: List[str]  # `git status --porcelain` after the second run: files the build left unignored


@pytest.fixture(scope="session")
def plain_builds(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> PlainBuilds:
    """``dpkg-buildpackage -us -uc`` twice in a row in a fresh clone: the plain tools, no wrapper script.

    The clone is of a repository made from the snapshot (what the work tree
    holds, committed), in another directory, every file with the checkout's
    mtime: its .deb must also be byte-identical to `make deb`'s.
    """
    # What debian/control's Build-Depends names (build-deb installs them too; this fixture may run alone).
    subprocess.run(["sh", str(ROOT / "scripts" / "apt-ensure"), "git", "dpkg-dev", "debhelper", "dh-python",
                    "pybuild-plugin-pyproject", "python3-all", "python3-setuptools"], env=_env(), check=True,
                   stdout=subprocess.DEVNULL)
    base = tmp_path_factory.mktemp("plain")
    origin = base / "origin"
    shutil.copytree(str(snapshot), str(origin), symlinks=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"]
    for argv in (git + ["init", "-q"], git + ["add", "-A"], git + ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(argv, cwd=str(origin), env=_env(), check=True, stdout=subprocess.DEVNULL)
    version, _, _ = _changelog()
    clone = base / "work" / f"{PACKAGE}-{version}"  # dpkg-source names the tarball's top directory after it
    clone.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], env=_env(), check=True)
    debs, logs = [], []
    env = {k: v for k, v in _env().items() if k != "SOURCE_DATE_EPOCH"}  # dpkg sets it from debian/changelog
    for run in (1, 2):
        p = subprocess.run(["dpkg-buildpackage", "-us", "-uc"], cwd=str(clone), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=900)
        log = p.stdout.decode("utf-8", "replace")
        assert p.returncode == 0, f"dpkg-buildpackage run {run} failed in a fresh clone:\n{log[-6000:]}"
        (deb,) = clone.parent.glob("*.deb")
        kept = base / f"run{run}-{deb.name}"
        shutil.move(str(deb), str(kept))
        debs.append(kept)
        logs.append(log)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=str(clone), env=_env(), stdout=subprocess.PIPE,
                            check=True).stdout.decode().splitlines()
    return PlainBuilds(clone, debs, logs, status)


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
    for suffix in (f"_{version}_all.deb", f"_{version}.dsc", f"_{upstream}.tar.xz"):
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
    # python3 once, admitting 3.6 (Ubuntu 18.04 CNs): dh_python3's python3:any (>= 3.6~).
    assert deps.get("python3") == {">= 3.6~"}, c["Depends"]
    assert len(c["Depends"].split(",")) == len(deps), f"a package named twice: {c['Depends']}"
    assert c.get("Enhances") == "dataone-cn-os-core"
    paths = set(v.members)
    for required in (COMMAND, f"{PRIVATE}/dataone_cn_sslverify/__init__.py",
                     f"{PRIVATE}/dataone_cn_sslverify/maint.py", f"{PRIVATE}/dataone_cn_sslverify/cli.py",
                     "/usr/share/man/man8/dataone-cn-sslverify.8.gz",
                     f"/usr/share/doc/{PACKAGE}/copyright",
                     f"/usr/share/doc/{PACKAGE}/changelog.gz",
                     f"/usr/share/doc/{PACKAGE}/README.Debian",
                     CONFFILE):
        assert required in paths, f"{required} not in the package"
    # Every module of the source tree is shipped, privately: nothing public, no command in /usr/bin.
    for py in sorted((ROOT / "dataone_cn_sslverify").glob("*.py")):
        assert f"{PRIVATE}/dataone_cn_sslverify/{py.name}" in paths
    assert not [p for p in paths if p.startswith(("/usr/lib/python3", "/usr/bin"))], sorted(paths)
    assert v.members[COMMAND][0] == "f0755"
    assert v.files[COMMAND].startswith(b"#!/usr/bin/python3 -IS\n")
    assert f'sys.path.insert(0, "{PRIVATE}")'.encode() in v.files[COMMAND]
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
    assert f"{PACKAGE} maintscript postinst" in v.scripts["postinst"]
    assert f"py3compile -p {PACKAGE} {PRIVATE}" in v.scripts["postinst"]
    assert f"{PACKAGE} maintscript prerm" in v.scripts["prerm"]
    for name in ("postinst", "prerm"):  # the command, not an interpreter (debhelper's py3compile/py3clean aside)
        assert "/usr/bin/python3" not in v.scripts[name] and "-m dataone_cn_sslverify" not in v.scripts[name]
    assert not _calls_python(v.scripts["postrm"])
    assert "rm -rf \"$STATE_DIR\"" in v.scripts["postrm"]


@pytest.mark.package
def test_dpkg_buildpackage_in_a_fresh_clone_twice(plain_builds: PlainBuilds) -> None:
    """The plain tools build it, and `clean` leaves the tree ready for the next build."""
    assert "Debian-native package" in plain_builds.logs[0], plain_builds.logs[0][-3000:]
    assert _sha256(plain_builds.debs[0]) == _sha256(plain_builds.debs[1]), "two builds in one tree differ"
    # What a build leaves behind is ignored (.gitignore), nothing else: no stray egg-info, build/.
    assert plain_builds.leftovers == [], plain_builds.leftovers
    # `debian/rules clean` removes what setuptools and pybuild wrote (debian/clean).
    subprocess.run(["debian/rules", "clean"], cwd=str(plain_builds.tree), env=_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = sorted(p.name for p in plain_builds.tree.iterdir()
                  if p.name in ("build", ".pybuild") or p.name.endswith(".egg-info"))
    assert left == [], f"clean left {left}"


@pytest.mark.package
def test_two_builds_are_byte_identical(deb_build: Build, plain_builds: PlainBuilds) -> None:
    """Same SOURCE_DATE_EPOCH (debian/changelog's), other directory, other mtimes, other tool: same .deb."""
    a, b = _sha256(deb_build.deb), _sha256(plain_builds.debs[0])
    print(f"build A {a}\nbuild B {b}")
    if a != b:
        va, vb = read_deb(deb_build.deb), read_deb(plain_builds.debs[0])
        diffs = [p for p in sorted(set(va.members) | set(vb.members))
                 if va.members.get(p) != vb.members.get(p) or va.files.get(p) != vb.files.get(p)]
        pytest.fail(f"the two builds differ: {a} vs {b}; payload differences: {diffs or 'none (metadata only)'}")
    # The source package too (the native tarball is made reproducibly by dpkg-source).
    for pattern in ("*.dsc", "*.tar.xz"):
        (fa,), (fb,) = deb_build.out.glob(pattern), plain_builds.tree.parent.glob(pattern)
        assert _sha256(fa) == _sha256(fb), f"{fa.name} differs between the builds"


# ---------------------------------------------------------------------------
# stdeb: an equivalent package
# ---------------------------------------------------------------------------

#: What stdeb (0.10) cannot express, so that its package differs from the
#: debian/ build's (docs/packaging.md "stdeb"; README "Building"): control
#: field -> why. Everything else must be equal; these must differ exactly so.
STDEB_CANNOT = {
    # stdeb always makes a 3.0 (quilt) package with a Debian revision (Debian-Version in stdeb.cfg).
    "Version": lambda a, b: b == a + "-1",
    # stdeb has no Enhances option (only a stdeb.cfg continuation-line quirk would put it there).
    "Enhances": lambda a, b: a == "dataone-cn-os-core" and b is None,
    # follows from the changelog below (stdeb's one "automatically created" entry)
    "Installed-Size": lambda a, b: True,
}
#: The same for the source package (.dsc): stdeb's control template hard-codes Standards-Version 3.9.6.
STDEB_SOURCE_CANNOT = {"Standards-Version": ("4.6.2", "3.9.6")}
#: The changelog: a native package ships changelog.gz, a non-native one changelog.Debian.gz (stdeb's).
CHANGELOGS = (f"/usr/share/doc/{PACKAGE}/changelog.gz", f"/usr/share/doc/{PACKAGE}/changelog.Debian.gz")


def _dsc(out: Path) -> Dict[str, str]:
    from debian.deb822 import Dsc

    (dsc,) = out.glob("*.dsc")
    with open(str(dsc)) as f:
        return {k: str(v) for k, v in Dsc(f).items()}


@pytest.mark.package
def test_stdeb_builds_an_equivalent_package(deb_build: Build, stdeb_build: Build) -> None:
    a, b = read_deb(deb_build.deb), read_deb(stdeb_build.deb)
    # Control: same name, architecture, maintainer, section, Homepage (none), Description ...
    for key in sorted(set(a.control) | set(b.control)):
        va, vb = a.control.get(key), b.control.get(key)
        if key in STDEB_CANNOT:
            assert STDEB_CANNOT[key](va, vb), f"control field {key}: expected stdeb's known difference, got {va!r} / {vb!r}"
        elif key == "Depends":  # the same relations; stdeb orders them differently
            assert depends_names(va or "") == depends_names(vb or ""), (va, vb)
        else:
            assert va == vb, f"control field {key} differs: {va!r} / {vb!r}"
    # The source packages: Section and Homepage equal; Standards-Version is stdeb's template's.
    sa, sb = _dsc(deb_build.out), _dsc(stdeb_build.out)
    for key in ("Section", "Homepage", "X-Python3-Version"):
        assert sa.get(key) == sb.get(key), f".dsc field {key} differs: {sa.get(key)!r} / {sb.get(key)!r}"
    for key, (want_a, want_b) in STDEB_SOURCE_CANNOT.items():
        assert (sa.get(key), sb.get(key)) == (want_a, want_b), key
    # Payload: same paths with the same types and modes (the changelog's name aside). There is no
    # byte-code to ignore: neither build ships .pyc (dh_python3 compiles on install).
    modes_a = {p: m[0] for p, m in a.members.items() if p != CHANGELOGS[0]}
    modes_b = {p: m[0] for p, m in b.members.items() if p != CHANGELOGS[1]}
    assert modes_a == modes_b
    assert CHANGELOGS[0] in a.members and CHANGELOGS[1] in b.members
    # Contents of every other file: the Python modules, the command, the conffile, the man page, copyright.
    differ = sorted(p for p in a.files if p not in CHANGELOGS and a.files[p] != b.files.get(p))
    assert not differ, f"files differ between the debian/ and the stdeb build: {differ}"
    # Conffiles, maintainer scripts (with debhelper's snippets) and triggers: identical.
    assert a.conffiles == b.conffiles == [CONFFILE]
    assert a.scripts == b.scripts
    assert a.triggers == b.triggers == TRIGGERS


@pytest.mark.package
def test_lintian_on_stdebs_package_and_source(stdeb_build: Build) -> None:
    """lintian on stdeb's .deb and .dsc: no error, no warning (info and pedantic tags from stdeb's templates shown)."""
    (dsc,) = stdeb_build.out.glob("*.dsc")
    p = subprocess.run(["lintian", "--display-info", "--fail-on", "error,warning", str(stdeb_build.deb), str(dsc)],
                       env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = p.stdout.decode("utf-8", "replace")
    print(out)
    tags = [ln for ln in out.splitlines() if re.match(r"^[EW]: ", ln)]
    assert not tags and p.returncode == 0, "lintian errors or warnings on stdeb's package:\n" + out


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
