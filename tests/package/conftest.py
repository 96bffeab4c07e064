"""Package tests: build the .deb (debian/ and stdeb), inspect it, lintian, maint entry points.

They are part of `make test`; deselect them for a fast run with
``-m "not package"``. The marker is registered here so that the project
needs no pytest.ini.
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "package: builds or inspects the Debian package, or runs the maintainer-script entry points "
        "(slow: dpkg-buildpackage, stdeb, lintian; deselect with -m 'not package')",
    )
    config.addinivalue_line(
        "markers",
        "lifecycle: installs, upgrades, removes and purges the .deb with apt in a debootstrap chroot with "
        "Apache running inside (test_lifecycle.py; first run builds the cached chroot, ~1 min; "
        "deselect with -m 'not lifecycle')",
    )
    config.addinivalue_line(
        "markers",
        "fleet: rolls the package out with the Ansible playbooks of deploy/ansible across three debootstrap "
        "chroot CN hosts (test_fleet.py, ~1-2 min; deselect with -m 'not fleet')",
    )


@pytest.fixture(scope="session")
def our_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our .deb, built once per session from this tree by scripts/build-deb (or $DATAONE_CN_SSLVERIFY_DEB)."""
    given = os.environ.get("DATAONE_CN_SSLVERIFY_DEB")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("our-deb")
    p = subprocess.run(["sh", str(REPO_ROOT / "scripts" / "build-deb"), "--out", str(out / "build")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": SYSTEM_PATH, "HOME": "/root"})
    assert p.returncode == 0, "scripts/build-deb failed:\n" + p.stderr.decode(errors="replace")[-4000:]
    return Path(p.stdout.decode().strip().splitlines()[-1])
