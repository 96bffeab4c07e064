"""prefetch against a real Apache: the dump started before the imports is the dump that runs now, or it is not used.

Each test gets its own instance (tests/conftest.py ``apache``); the
environment is the instance's (``APACHE_CONFDIR``/``APACHE_ENVVARS``), as
the command sees it.
"""

import time

import pytest

from harness import ApacheInstance

from dataone_cn_sslverify import apachecmd, apachectl, prefetch

pytestmark = pytest.mark.integration


@pytest.fixture
def as_instance(apache: ApacheInstance, monkeypatch: pytest.MonkeyPatch) -> ApacheInstance:
    for k, v in apache.env().items():
        monkeypatch.setenv(k, v)
    return apache


def test_a_prefetched_dump_is_the_dump_that_would_run_now(as_instance: ApacheInstance) -> None:
    fresh = apachectl.dump_includes()
    assert fresh.ok and apachectl.parse_dump_includes(fresh.output)
    time.sleep(prefetch.MARGIN + 0.1)  # every file older than the margin (the instance was just made)
    assert prefetch.start(["apply"])
    got = apachectl.dump_includes()  # takes the prefetched run
    assert got.ok and got.output == fresh.output and got.argv == fresh.argv
    assert prefetch.take(list(got.argv), apachectl.environment()) is None, "used once only"


def test_a_file_changed_after_the_start_makes_it_run_again(as_instance: ApacheInstance) -> None:
    time.sleep(prefetch.MARGIN + 0.1)
    assert prefetch.start(["revert"])
    time.sleep(0.05)
    as_instance.vhost_path.write_bytes(as_instance.vhost_bytes() + b"\n# an edit meanwhile\n")
    exe = apachecmd.apache2ctl()
    assert prefetch.take([exe] + list(apachecmd.DUMP_ARGS), apachectl.environment()) is None


def test_another_environment_or_a_failing_dump_is_not_used(as_instance: ApacheInstance,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    time.sleep(prefetch.MARGIN + 0.1)
    exe = apachecmd.apache2ctl()
    assert prefetch.start(["status"])
    monkeypatch.setenv("APACHE_ARGUMENTS", "-D SOMETHING_ELSE")
    assert prefetch.take([exe] + list(apachecmd.DUMP_ARGS), apachectl.environment()) is None
    monkeypatch.delenv("APACHE_ARGUMENTS")
    broken = as_instance.enable_conf("zz-broken", "ThisIsNotADirective on\n")
    try:
        time.sleep(prefetch.MARGIN + 0.1)
        assert prefetch.start(["apply"])
        assert prefetch.take([exe] + list(apachecmd.DUMP_ARGS), apachectl.environment()) is None
        res = apachectl.dump_includes()  # and the command's own run says why
        assert not res.ok and "ThisIsNotADirective" in res.first_error
    finally:
        (as_instance.confdir / "conf-enabled" / broken.name).unlink()


def test_the_command_line_decides(as_instance: ApacheInstance) -> None:
    assert not prefetch.start(["monitor"]) and not prefetch.start(["--vhost", str(as_instance.vhost_path), "apply"])
    assert prefetch.take(["x"], {}) is None
