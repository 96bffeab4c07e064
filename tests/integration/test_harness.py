"""Tests of the integration harness itself, against the real Apache 2.4.

Why they exist: every integration test of the package trusts the harness to
build a realistic CN, to report what the server really did, and to leave no
server behind.  Each test here can fail if one of those promises breaks.
"""

import os
import socket
import time
from typing import Callable

import pytest

from harness import VARIANTS, ApacheInstance, fixture_path, render_fixture
from harness.instance import CN_INDEX_MARKER, POLICY_SOURCE, REPLICATION_MARKER, USER_AGENTS

pytestmark = pytest.mark.integration

IE11 = USER_AGENTS["ie11"]
SAFARI = USER_AGENTS["safari"]
REPLICATION = "/metacat/servlet/replication"


# ---------------------------------------------------------------- fixtures on disk


def test_fixture_vhosts_differ_only_in_the_client_verification_block() -> None:
    """The four fixtures share every byte outside the block (tests rely on it)."""
    def split(variant: str):  # (before, block, after)
        data = fixture_path(variant).read_bytes()
        assert b"\r" not in data, "%s must be LF-only" % variant
        start = data.index(b"verified up to a depth of 10.\n\t#\n") + len(b"verified up to a depth of 10.\n\t#\n")
        end = data.index(b" \t\n\t#   Server Certificate:")
        return data[:start], data[start:end], data[end:]

    before, block, after = split("webkit-only")
    blocks = set()
    for variant in VARIANTS:
        b, blk, a = split(variant)
        assert (b, a) == (before, after), variant
        assert blk.count(b"SSLVerifyClient") >= 1 and blk.rstrip().endswith(b"SSLVerifyDepth 10"), (variant, blk)
        assert b"require" not in blk
        blocks.add(blk)
    assert len(blocks) == len(VARIANTS)
    # Rendering fills every placeholder.
    rendered = render_fixture(
        "webkit-only", server_name="x", https_port=1, http_port=2, cert_dir="/c",
        docroot="/d", apache_confdir="/a", log_dir="/l",
    )
    assert b"@" + b"HTTPS_PORT@" not in rendered and b"<VirtualHost *:1>" in rendered
    with pytest.raises(KeyError):
        render_fixture("webkit-only", server_name="x")


@pytest.mark.parametrize("variant", VARIANTS)
def test_configtest_passes_for_each_variant(apache_instance_factory: Callable[..., ApacheInstance], variant: str) -> None:
    inst = apache_instance_factory(variant)
    r = inst.configtest()
    assert r.ok and "Syntax OK" in r.output, r.output
    # Debian layout: the vhost is enabled by a2ensite's relative symlink and loaded via sites-enabled.
    assert os.readlink(str(inst.vhost_link)) == "../sites-available/cn-ssl.conf"
    assert inst.vhost_bytes() == inst.render(variant)
    includes = inst.apache2ctl("-t", "-D", "DUMP_INCLUDES").output
    assert str(inst.vhost_link) in includes and str(inst.jk_mount) in includes, includes
    assert inst.env()["APACHE_CONFDIR"] == str(inst.confdir)
    assert not inst.is_running()


# ---------------------------------------------------------------- serving


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_cn_index_is_served_statically_with_the_test_server_cert(apache: ApacheInstance, tls: str) -> None:
    r = apache.request("/cn/", user_agent=SAFARI, tls=tls)
    assert r.exit_code == 0 and r.status == 200, r
    assert CN_INDEX_MARKER.encode() in r.body
    assert r.tls_version == "TLSv" + tls
    # Verified by curl against the test CA (--cacert), for the name sent as SNI.
    assert "SSL certificate verify ok." in r.stderr, r
    assert r.server_subject == "CN=" + apache.server_name
    assert r.server_issuer is not None and "DataONE Test CA" in r.server_issuer
    assert r.headers.get("x-test-sni") == apache.server_name, r.headers


def test_http_vhost_redirects_to_https(apache: ApacheInstance) -> None:
    r = apache.request("/cn/", scheme="http")
    assert r.status == 301, r
    assert r.headers.get("location") == "https://%s:%d/cn/" % (apache.server_name, apache.https_port)


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_replication_requires_a_trusted_certificate(apache: ApacheInstance, tls: str) -> None:
    without = apache.request(REPLICATION, tls=tls)
    assert without.status in (0, 403) and without.client_verify != "SUCCESS", without
    assert without.cert_requested, without

    untrusted = apache.request(REPLICATION, tls=tls, cert="untrusted")
    assert untrusted.status in (0, 403) and untrusted.client_verify != "SUCCESS", untrusted

    trusted = apache.request(REPLICATION, tls=tls, cert="trusted")
    assert trusted.status == 200 and trusted.client_verify == "SUCCESS", trusted
    assert REPLICATION_MARKER.encode() in trusted.body


# ---------------------------------------------------------------- who is asked for a certificate


def test_webkit_only_asks_ie11_to_renegotiate_but_not_safari(apache: ApacheInstance) -> None:
    assert apache.variant == "webkit-only"

    mark = apache.error_log_mark()
    ie = apache.request("/cn/", user_agent=IE11, tls="1.2")
    log = apache.error_log_since(mark)
    assert ie.status == 200 and ie.client_verify == "NONE", ie
    assert ie.hello_request and ie.cert_request_post and not ie.cert_request_initial, ie
    assert "AH02221" in log, log  # "Requesting connection re-negotiation" (ssl:info)

    mark = apache.error_log_mark()
    safari = apache.request("/cn/", user_agent=SAFARI, tls="1.2")
    log = apache.error_log_since(mark)
    assert safari.status == 200, safari
    assert not safari.hello_request and not safari.cert_requested, safari
    assert "AH02221" not in log, log

    # The incident itself: a client that refuses renegotiation (IE on Windows 7).
    mark = apache.error_log_mark()
    refused = apache.python_request("/cn/", user_agent=IE11, tls="1.2", no_renegotiation=True)
    log = apache.error_log_since(mark)
    assert refused.status == 0, refused
    assert "AH02261" in log, log  # "Re-negotiation handshake failed"


@pytest.mark.parametrize("apache", ["browser-list"], indirect=True)
def test_browser_list_does_not_ask_ie11(apache: ApacheInstance) -> None:
    for tls in ("1.2", "1.3"):
        mark = apache.error_log_mark()
        ie = apache.request("/cn/", user_agent=IE11, tls=tls)
        log = apache.error_log_since(mark)
        assert ie.status == 200 and not ie.cert_requested and not ie.hello_request, ie
        assert "AH02221" not in log and "AH10158" not in log, log
        refusing = apache.python_request("/cn/", user_agent=IE11, tls=tls, no_renegotiation=True)
        assert refusing.status == 200, refusing
    # API clients are still asked, and can authenticate.
    api = apache.request("/cn/", tls="1.2", cert="trusted")
    assert api.status == 200 and api.cert_request_post and api.client_verify == "SUCCESS", api


# ---------------------------------------------------------------- lifecycle


def test_graceful_reload_keeps_the_parent_and_serves(apache: ApacheInstance) -> None:
    parent = apache.pid()
    r = apache.graceful()
    assert r.ok, r.output
    assert apache.pid() == parent and apache.is_running()
    assert apache.request("/cn/", user_agent=SAFARI).status == 200


def test_stop_is_clean_and_leaves_no_process(
    apache_instance_factory: Callable[..., ApacheInstance], capsys: pytest.CaptureFixture[str]
) -> None:
    inst = apache_instance_factory("webkit-only")
    t0 = time.monotonic()
    inst.start()
    started = time.monotonic() - t0
    pids = inst.processes()
    parent = inst.pid()
    assert inst.is_running() and parent in pids and len(pids) >= 2, pids

    t1 = time.monotonic()
    inst.stop()
    stopped = time.monotonic() - t1
    assert not inst.is_running() and inst.pid() is None
    assert inst.processes() == []
    assert all(not os.path.exists("/proc/%d" % p) or _zombie(p) for p in pids)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", inst.https_port), timeout=1).close()
    assert "caught SIGTERM, shutting down" in inst.error_log()

    with capsys.disabled():
        print("\n[harness timing] start %.3fs (until TLS answers), stop %.3fs (until no process), total %.3fs"
              % (started, stopped, started + stopped))


def _zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_policy_snippet_is_installed_and_includable(apache_instance_factory: Callable[..., ApacheInstance]) -> None:
    """The instance carries the policy at DATAONE_CN_SSLVERIFY_POLICY, and Apache can Include it."""
    inst = apache_instance_factory("webkit-only")
    policy = inst.env()["DATAONE_CN_SSLVERIFY_POLICY"]
    assert policy == str(inst.policy_path) and inst.policy_path.is_file()
    if POLICY_SOURCE.is_file():
        assert inst.policy_path.read_bytes() == POLICY_SOURCE.read_bytes()
    block = (b'\tSSLVerifyClient none\n\t<Location "/cn">\n\t\t<If " ! ( %{HTTP_USER_AGENT} =~ /webkit/i )">\n'
             b'\t\t\tSSLVerifyClient optional\n\t\t</If>\n\t</Location>\n\tSSLVerifyDepth 10\n')
    assert inst.vhost_bytes().count(block) == 1
    inst.write_vhost(inst.vhost_bytes().replace(block, b"\tInclude " + policy.encode() + b"\n"))
    r = inst.configtest()
    assert r.ok, r.output
    inst.start()
    ie = inst.request("/cn/", user_agent=IE11, tls="1.2")
    api = inst.request("/cn/", tls="1.2", cert="trusted")
    assert ie.status == 200 and not ie.cert_requested, ie
    assert api.status == 200 and api.cert_request_post and api.client_verify == "SUCCESS", api
