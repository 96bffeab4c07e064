"""Shared pytest fixtures: a real Apache instance, a throwaway PKI.

Why no silent skips: an integration suite that skips when Apache is missing
reports green while testing nothing.  If the tools are missing the fixtures
*fail* and say how to get them (``make test`` installs apache2).
"""

import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:
    # ``import harness`` works whether or not tests/ is a package.
    sys.path.insert(0, str(_TESTS_DIR))

from harness import VARIANTS, ApacheInstance, Pki, make_pki  # noqa: E402
from harness.instance import APACHE2, APACHE2CTL, CURL, HOST_MODS_AVAILABLE  # noqa: E402

DEFAULT_SERVER_NAME = "cn.dataone.test"


def pytest_configure(config: pytest.Config) -> None:
    """Register markers here so the project needs no pytest.ini."""
    config.addinivalue_line(
        "markers",
        "integration: runs a real Apache 2.4 on 127.0.0.1 with real clients (curl, openssl, Python ssl)",
    )
    config.addinivalue_line(
        "markers",
        "browser: drives Debian's headless chromium and firefox-esr against the harness CN (run alone: -m browser)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """On failure, attach the tail of each instance's error log to the report.

    Why: a failed TLS exchange is only explainable with the server's side
    (AH02261, AH10158, ...), and the temp dir may be gone by the time anyone looks.
    """
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for inst in getattr(item, "_apache_instances", []):
            report.sections.append(("apache error log %s" % inst.root, inst.error_log()[-6000:]))


def _remember(request: pytest.FixtureRequest, inst: ApacheInstance) -> None:
    node = request.node
    if not hasattr(node, "_apache_instances"):
        node._apache_instances = []  # type: ignore[attr-defined]
    node._apache_instances.append(inst)  # type: ignore[attr-defined]


def _require_integration_tools() -> None:
    """Fail (not skip) with an actionable message when the real server cannot run."""
    problems: List[str] = []
    for tool in (APACHE2CTL, APACHE2, CURL, "/usr/bin/openssl"):
        if not os.access(tool, os.X_OK):
            problems.append("%s not found" % tool)
    if not (HOST_MODS_AVAILABLE / "ssl.load").exists():
        problems.append("%s/ssl.load not found" % HOST_MODS_AVAILABLE)
    if os.geteuid() != 0:
        problems.append("not root (Apache must switch its children to www-data; apache2ctl chowns run dirs)")
    if problems:
        pytest.fail(
            "integration tests need Debian's apache2, curl and openssl, run as root: "
            + "; ".join(problems)
            + ".  Run `make test` (installs them) or `apt-get install -y apache2 curl openssl`.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One throwaway PKI per session (CA, server, trusted and untrusted clients)."""
    _require_integration_tools()
    return make_pki(tmp_path_factory.mktemp("pki"), DEFAULT_SERVER_NAME)


@pytest.fixture
def apache_instance_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[Callable[..., ApacheInstance]]:
    """Build (not start) instances: ``make(variant="webkit-only", **ApacheInstance kwargs)``.

    Each gets its own directory; all are stopped at teardown, and a process
    left behind fails the test.
    """
    made: List[ApacheInstance] = []

    def make(variant: str = "webkit-only", **kwargs: Any) -> ApacheInstance:
        if kwargs.get("server_name", DEFAULT_SERVER_NAME) == pki.server_name:
            kwargs.setdefault("pki", pki)
        inst = ApacheInstance(tmp_path_factory.mktemp("apache-" + variant), variant, **kwargs)
        made.append(inst)
        _remember(request, inst)
        return inst

    yield make
    leaked: Dict[str, List[int]] = {}
    for inst in made:
        inst.cleanup()
        if inst.processes():
            leaked[str(inst.root)] = inst.processes()
    if leaked:
        pytest.fail("Apache processes survived teardown: %s" % leaked, pytrace=False)


@pytest.fixture
def apache(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[ApacheInstance]:
    """A running instance in ``tmp_path`` with the webkit-only vhost (production before the change).

    Pick another variant with ``@pytest.mark.parametrize("apache", ["browser-list"], indirect=True)``;
    a dict param passes keyword arguments (``{"variant": ..., "loglevel": ...}``).
    """
    param = getattr(request, "param", "webkit-only")
    kwargs: Dict[str, Any] = dict(param) if isinstance(param, dict) else {"variant": param}
    if kwargs.get("variant", "webkit-only") not in VARIANTS:
        raise ValueError("unknown variant %r" % kwargs.get("variant"))
    if kwargs.get("server_name", DEFAULT_SERVER_NAME) == pki.server_name:
        kwargs.setdefault("pki", pki)
    inst = ApacheInstance(tmp_path, **kwargs)
    _remember(request, inst)
    try:
        inst.start()
        yield inst
    finally:
        inst.cleanup()
    if inst.processes():
        pytest.fail("Apache processes survived teardown: %s" % inst.processes(), pytrace=False)
