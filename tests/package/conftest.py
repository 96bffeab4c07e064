"""Package tests: build the .deb (debian/ and stdeb), inspect it, lintian, maint entry points.

They are part of `make test`; deselect them for a fast run with
``-m "not package"``. The marker is registered here so that the project
needs no pytest.ini.
"""

from __future__ import annotations

import pytest


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
