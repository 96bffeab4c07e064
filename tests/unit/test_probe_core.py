"""Unit tests for the pure core of `probe`: profiles, classifier, parsers."""

import socket

import pytest

from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify import results as R
from dataone_cn_sslverify import tlsobserve as T
from dataone_cn_sslverify.tlsobserve import Event
from dataone_cn_sslverify import records


def ev(direction, kind, length=0, detail="", version=None):
    return Event(direction, kind, length, detail, version)


# Message sequences as the client sees them (shapes measured with Apache 2.4 /
# OpenSSL 3.0).
TLS12_HANDSHAKE = [
    ev("write", "ClientHello"),
    ev("read", "ServerHello"),
    ev("read", "Certificate", 500),
    ev("read", "ServerKeyExchange"),
    ev("read", "ServerHelloDone"),
    ev("write", "ClientKeyExchange"),
    ev("write", "Finished"),
    ev("read", "NewSessionTicket"),
    ev("read", "Finished"),
]
TLS12_HANDSHAKE_WITH_REQUEST = [
    ev("write", "ClientHello"),
    ev("read", "ServerHello"),
    ev("read", "Certificate", 500),
    ev("read", "ServerKeyExchange"),
    ev("read", "CertificateRequest"),
    ev("read", "ServerHelloDone"),
    ev("write", "Certificate", 7),
    ev("write", "ClientKeyExchange"),
    ev("write", "Finished"),
    ev("read", "Finished"),
]
TLS12_RENEGOTIATION = TLS12_HANDSHAKE + [
    ev("read", "HelloRequest", 4),
    ev("write", "ClientHello"),
    ev("read", "ServerHello"),
    ev("read", "Certificate", 500),
    ev("read", "ServerKeyExchange"),
    ev("read", "CertificateRequest"),
    ev("read", "ServerHelloDone"),
    ev("write", "Certificate", 650),
    ev("write", "ClientKeyExchange"),
    ev("write", "CertificateVerify"),
    ev("write", "Finished"),
    ev("read", "Finished"),
]
TLS13_HANDSHAKE = [
    ev("write", "ClientHello"),
    ev("read", "ServerHello"),
    ev("read", "EncryptedExtensions"),
    ev("read", "Certificate", 500),
    ev("read", "CertificateVerify"),
    ev("read", "Finished"),
    ev("write", "Finished"),
]
TLS13_HANDSHAKE_WITH_REQUEST = [
    ev("write", "ClientHello"),
    ev("read", "ServerHello"),
    ev("read", "EncryptedExtensions"),
    ev("read", "CertificateRequest"),
    ev("read", "Certificate", 500),
    ev("read", "CertificateVerify"),
    ev("read", "Finished"),
    ev("write", "Certificate", 8),
    ev("write", "Finished"),
]
TLS13_PHA = TLS13_HANDSHAKE + [
    ev("read", "NewSessionTicket"),
    ev("read", "NewSessionTicket"),
    ev("read", "CertificateRequest", 60),
    ev("write", "Certificate", 700),
    ev("write", "CertificateVerify"),
    ev("write", "Finished"),
]


class TestClassify:
    def test_no_request(self):
        for events, tls in ((TLS12_HANDSHAKE, "1.2"), (TLS13_HANDSHAKE, "1.3"), ([], None)):
            obs = T.classify(events, tls)
            assert not obs.cert_requested and obs.how is None and not obs.cert_sent

    def test_initial_handshake_tls12(self):
        obs = T.classify(TLS12_HANDSHAKE_WITH_REQUEST, "1.2")
        assert obs.cert_requested and obs.how == T.HOW_HANDSHAKE
        assert not obs.cert_sent  # 7 bytes: empty Certificate message

    def test_initial_handshake_tls13(self):
        obs = T.classify(TLS13_HANDSHAKE_WITH_REQUEST, "1.3")
        assert obs.how == T.HOW_HANDSHAKE and not obs.cert_sent

    def test_renegotiation(self):
        obs = T.classify(TLS12_RENEGOTIATION, "1.2")
        assert obs.how == T.HOW_RENEGOTIATION and obs.cert_sent

    def test_post_handshake(self):
        obs = T.classify(TLS13_PHA, "1.3")
        assert obs.how == T.HOW_POST_HANDSHAKE and obs.cert_sent

    def test_handshake_complete_needs_both_finished(self):
        # TLS 1.3: the server's Finished comes first; a request before the
        # client's Finished is still part of the handshake.
        events = TLS13_HANDSHAKE[:-1] + [ev("read", "CertificateRequest"), ev("write", "Finished")]
        assert T.classify(events, "1.3").how == T.HOW_HANDSHAKE

    def test_first_request_decides(self):
        events = TLS12_HANDSHAKE_WITH_REQUEST + TLS12_RENEGOTIATION[len(TLS12_HANDSHAKE):]
        assert T.classify(events, "1.2").how == T.HOW_HANDSHAKE

    def test_request_after_handshake_without_hello_request(self):
        events = TLS12_HANDSHAKE + [ev("read", "CertificateRequest")]
        assert T.classify(events, "1.2").how == T.HOW_RENEGOTIATION
        assert T.classify(TLS13_HANDSHAKE + [ev("read", "CertificateRequest")], None).how == T.HOW_POST_HANDSHAKE

    def test_certificate_written_before_request_is_ignored(self):
        events = [ev("write", "Certificate", 900)] + TLS13_HANDSHAKE
        assert not T.classify(events, "1.3").cert_sent

    def test_alerts(self):
        events = TLS13_PHA + [
            ev("read", "Alert", 2, "fatal unknown_ca"),
            ev("read", "Alert", 2, "warning close_notify"),
            ev("write", "Alert", 2, "fatal decode_error"),
        ]
        assert T.classify(events, "1.3").alerts_received == ("fatal unknown_ca",)


class TestPythonEvent:
    def test_handshake_messages(self):
        assert T.python_event("read", 22, b"\x0d\x00\x00\x20" + b"x" * 32) == Event(
            "read", "CertificateRequest", 36
        )
        assert T.python_event("read", 22, b"\x00\x00\x00\x00").kind == "HelloRequest"
        assert T.python_event("write", 22, b"\x14" + b"\x00" * 15).kind == "Finished"
        assert T.python_event("read", 22, b"\x63").kind == "handshake-99"

    def test_enum_arguments(self):
        import ssl

        ctype = getattr(ssl, "_TLSContentType", None)
        if ctype is None:
            pytest.skip("no ssl._TLSContentType on this Python")
        e = T.python_event("read", ctype.HANDSHAKE, b"\x0d\x00\x00\x00")
        assert e is not None and e.kind == "CertificateRequest"

    def test_alert(self):
        assert T.python_event("read", 21, b"\x02\x30") == Event("read", "Alert", 2, "fatal unknown_ca")
        assert T.python_event("read", 21, b"\x02\xfa").detail == "fatal 250"

    def test_ignored(self):
        assert T.python_event("read", 23, b"GET") is None  # application data
        assert T.python_event("read", 256, b"\x16\x03\x03\x00\x10") is None  # record header
        assert T.python_event("read", 22, b"") is None
        assert T.python_event("read", "bogus", b"\x0d") is None


class TestParseMsgLine:
    def test_handshake(self):
        assert T.parse_msg_line("<<< TLS 1.3, Handshake [length 002d], CertificateRequest") == Event(
            "read", "CertificateRequest", 0x2D, version="1.3"
        )
        assert T.parse_msg_line("<<< TLS 1.2, Handshake [length 0004], HelloRequest\n") == Event(
            "read", "HelloRequest", 4, version="1.2"
        )
        assert T.parse_msg_line(">>> TLS 1.3, Handshake [length 018a], Certificate") == Event(
            "write", "Certificate", 0x18A, version="1.3"
        )

    def test_alert(self):
        assert T.parse_msg_line("<<< TLS 1.2, Alert [length 0002], fatal unknown_ca") == Event(
            "read", "Alert", 2, "fatal unknown_ca", "1.2"
        )

    def test_ignored(self):
        for line in (
            ">>> TLS 1.0, RecordHeader [length 0005]",
            "<<< TLS 1.3, InnerContent [length 0001]",
            ">>> TLS 1.3, ChangeCipherSpec [length 0001]",
            "    0000 - 16 03 01 00 f0 01 00 00-ec 03 03 2f 9d 3c 5e 16   .........../.<^.",
            "read R BLOCK",
            "",
        ):
            assert T.parse_msg_line(line) is None


S_CLIENT_MSGS_TLS13_PHA = """\
>>> TLS 1.0, RecordHeader [length 0005]
    0000 - 16 03 01 00 f0                                    .....
>>> TLS 1.3, Handshake [length 00f0], ClientHello
<<< TLS 1.3, Handshake [length 007a], ServerHello
<<< TLS 1.3, InnerContent [length 0001]
<<< TLS 1.3, Handshake [length 0006], EncryptedExtensions
<<< TLS 1.3, Handshake [length 018a], Certificate
<<< TLS 1.3, Handshake [length 004f], CertificateVerify
<<< TLS 1.3, Handshake [length 0034], Finished
>>> TLS 1.3, ChangeCipherSpec [length 0001]
>>> TLS 1.3, Handshake [length 0034], Finished
<<< TLS 1.3, Handshake [length 0269], NewSessionTicket
<<< TLS 1.3, Handshake [length 0040], CertificateRequest
>>> TLS 1.3, Handshake [length 0200], Certificate
>>> TLS 1.3, Handshake [length 004e], CertificateVerify
>>> TLS 1.3, Handshake [length 0034], Finished
<<< TLS 1.3, Alert [length 0002], warning close_notify
"""

S_CLIENT_MSGS_TLS12_NEGOTIATED = """\
>>> TLS 1.3, Handshake [length 0138], ClientHello
<<< TLS 1.3, Handshake [length 0041], ServerHello
<<< TLS 1.2, Handshake [length 0004], ServerHelloDone
>>> TLS 1.2, Handshake [length 0010], Finished
<<< TLS 1.2, Handshake [length 0010], Finished
<<< TLS 1.2, Handshake [length 0004], HelloRequest
<<< TLS 1.2, Handshake [length 0041], ServerHello
<<< TLS 1.2, Handshake [length 0020], CertificateRequest
>>> TLS 1.2, Handshake [length 0007], Certificate
"""


class TestParseSClient:
    def test_pha(self):
        events, tls, response, error = T.parse_s_client(b"HTTP/1.1 200 OK\r\n\r\nhi", S_CLIENT_MSGS_TLS13_PHA, "", 0)
        assert tls == "1.3" and error is None and response.startswith(b"HTTP/1.1 200")
        obs = T.classify(events, tls)
        assert obs.how == T.HOW_POST_HANDSHAKE and obs.cert_sent

    def test_version_from_finished_not_server_hello(self):
        events, tls, _, _ = T.parse_s_client(b"", S_CLIENT_MSGS_TLS12_NEGOTIATED, "", 0)
        assert tls == "1.2"
        obs = T.classify(events, tls)
        assert obs.how == T.HOW_RENEGOTIATION and not obs.cert_sent

    def test_version_fallback_to_session_summary(self):
        _, tls, _, _ = T.parse_s_client(b"---\nNew, TLSv1.2, Cipher is ECDHE-RSA-AES256-GCM-SHA384\n", "", "", 0)
        assert tls == "1.2"

    def test_openssl_error(self):
        stderr = (
            "40C7C5F6D27F0000:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:"
            "../ssl/record/rec_layer_s3.c:1586:SSL alert number 48\n"
        )
        _, tls, _, error = T.parse_s_client(b"", "", stderr, 1)
        assert tls is None and error == "ssl3_read_bytes: tlsv1 alert unknown ca"

    def test_connect_error(self):
        _, _, _, error = T.parse_s_client(b"", "", "connect:errno=111\n", 1)
        assert error == "connect:errno=111"
        _, _, _, error = T.parse_s_client(b"", "", "", 1)
        assert error == "openssl s_client exited with 1"


class TestHttp:
    def test_status_and_headers(self):
        status, headers = T.parse_http_response(
            b"HTTP/1.1 403 Forbidden\r\nDate: x\r\nX-SSL-Client-Verify: NONE\r\n\r\n<html>HTTP/1.1 200 OK</html>"
        )
        assert status == 403 and headers["x-ssl-client-verify"] == "NONE" and headers["date"] == "x"

    def test_no_response(self):
        assert T.parse_http_response(b"") == (None, {})
        assert T.parse_http_response(b"garbage\r\n") == (None, {})

    def test_request(self):
        req = T.build_request("/cn/v2/node", "cn.example.org", 443, "curl/7.88.1")
        assert req == (
            b"GET /cn/v2/node HTTP/1.1\r\nHost: cn.example.org\r\nUser-Agent: curl/7.88.1\r\n"
            b"Accept: */*\r\nConnection: close\r\n\r\n"
        )
        assert b"Host: cn.test:8443\r\n" in T.build_request("/", "cn.test", 8443, "x")
        assert b"Host: [::1]:8443\r\n" in T.build_request("/", "::1", 8443, "x")

    @pytest.mark.parametrize(
        "path,name,ua",
        [("cn", "h", "ua"), ("/a b", "h", "ua"), ("/", "h\r\nX: y", "ua"), ("/", "h", "ua\r\nX: y")],
    )
    def test_request_rejects_injection(self, path, name, ua):
        with pytest.raises(ValueError):
            T.build_request(path, name, 443, ua)


class TestProfiles:
    def test_catalogue(self):
        ie = C.get_profile("browser-ie11-win7/1.2/nocert")
        assert ie.kind == C.BROWSER and not ie.cert and not ie.pha and not ie.renegotiation
        assert ie.user_agent == "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"
        curl = C.get_profile("api-curl/1.3/cert")
        assert curl.kind == C.API and curl.pha and curl.cert and curl.user_agent.startswith("curl/")
        assert any(c.kind == C.API and not c.pha for c in C.CLIENTS)  # a client without PHA
        ids = [c.id for c in C.CLIENTS]
        assert len(ids) == len(set(ids))
        for word in ("Chrome", "Firefox", "Safari"):
            assert any(word in c.user_agent for c in C.CLIENTS if c.kind == C.BROWSER)
        assert any(c.user_agent.startswith("python-requests/") for c in C.CLIENTS)

    def test_browser_user_agents_match_the_target_pattern(self):
        # The design's browser regex; every browser User-Agent of the catalogue must match it
        # and no API one may, or the live probe would test the wrong thing.
        import re

        pattern = re.compile(r"(windows|chrome|mozilla|safari|webkit)", re.I)
        for c in C.CLIENTS:
            assert bool(pattern.search(c.user_agent)) == (c.kind == C.BROWSER), c.id
        for fam, ua in C.BROWSER_USER_AGENTS:
            assert pattern.search(ua), fam

    def test_validation(self):
        with pytest.raises(ValueError):
            C.Profile("x", "robot", "ua")
        with pytest.raises(ValueError):
            C.Profile("x", C.API, "ua", tls="1.1")
        with pytest.raises(ValueError):
            C.Profile("x", C.API, "ua\n")
        with pytest.raises(KeyError):
            C.get_profile("nope")
        with pytest.raises(KeyError):
            C.get_profile("api-curl")  # the legacy quick set is gone: one catalogue

    def test_frozen(self):
        with pytest.raises(records.FrozenInstanceError):
            C.CLIENTS[0].id = "x"  # type: ignore[misc]


class TestSClientArgv:
    def test_full(self):
        prof = records.replace(C.get_profile("api-curl/1.3/cert"), tls="1.3")
        argv = T.s_client_argv(
            "127.0.0.1", 8443, "cn.test", prof, "/tmp/m", ca_file="ca.crt", client_cert="c.pem", client_key="c.key"
        )
        assert argv[:4] == ["openssl", "s_client", "-connect", "127.0.0.1:8443"]
        joined = " ".join(argv)
        for part in (
            "-servername cn.test",
            "-msg -msgfile /tmp/m",
            "-quiet",
            "-ign_eof",
            "-nocommands",
            "-tls1_3",
            "-enable_pha",
            "-cert c.pem -key c.key",
            "-CAfile ca.crt -verify_return_error",
            "-verify_hostname cn.test",
        ):
            assert part in joined

    def test_minimal(self):
        prof = records.replace(C.get_profile("browser-chrome/1.3/nocert"), tls=None)
        argv = T.s_client_argv("::1", 443, "127.0.0.1", prof, "/tmp/m", client_cert="c")
        assert "[::1]:443" in argv and "-noservername" in argv
        for flag in ("-enable_pha", "-cert", "-tls1_2", "-tls1_3", "-CAfile", "-servername"):
            assert flag not in argv

    def test_pinned_tls12(self):
        argv = T.s_client_argv("h", 1, "n", C.get_profile("browser-ie11-win7/1.2/nocert"), "/tmp/m")
        assert "-tls1_2" in argv


class TestFinish:
    prof = C.get_profile("api-curl/1.3/cert")

    def test_verified_inferred(self):
        r = R.finish(self.prof, "python", TLS13_PHA, "1.3", b"HTTP/1.1 200 OK\r\n\r\n", None)
        assert (r.cert_requested, r.how, r.status, r.cert_sent, r.verified, r.error) == (
            True, T.HOW_POST_HANDSHAKE, 200, True, "SUCCESS", None,
        )
        r = R.finish(self.prof, "python", TLS12_HANDSHAKE_WITH_REQUEST, "1.2", b"HTTP/1.1 200 OK\r\n\r\n", None)
        assert r.verified == "NONE"
        r = R.finish(self.prof, "python", TLS13_HANDSHAKE, "1.3", b"HTTP/1.1 403 Forbidden\r\n\r\n", None)
        assert r.verified is None and r.status == 403 and not r.cert_requested

    def test_verified_failed_on_alert(self):
        events = TLS13_PHA + [ev("read", "Alert", 2, "fatal unknown_ca")]
        r = R.finish(self.prof, "openssl", events, "1.3", b"", "ssl3_read_bytes: boom")
        assert r.verified == "FAILED" and r.status is None
        assert r.error == "ssl3_read_bytes: boom (server alert: fatal unknown_ca)"
        r = R.finish(self.prof, "openssl", events, "1.3", b"", "tlsv1 alert unknown_ca")
        assert r.error == "tlsv1 alert unknown_ca"

    def test_alert_not_repeated_when_error_names_it(self):
        events = TLS13_PHA + [ev("read", "Alert", 2, "fatal unknown_ca")]
        r = R.finish(self.prof, "python", events, "1.3", b"", "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
        assert r.error == "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"

    def test_extra_verify_header(self):
        resp = b"HTTP/1.1 200 OK\r\nX-Test-Client-Verify: GENEROUS\r\n\r\n"
        assert R.finish(self.prof, "python", TLS13_PHA, "1.3", resp, None).verified == "SUCCESS"
        r = R.finish(self.prof, "python", TLS13_PHA, "1.3", resp, None, ("X-Test-Client-Verify",))
        assert r.verified == "GENEROUS"

    def test_verified_from_header_wins(self):
        r = R.finish(
            self.prof, "python", TLS13_PHA, "1.3", b"HTTP/1.1 200 OK\r\nX-SSL-Client-Verify: FAILED:x\r\n\r\n", None
        )
        assert r.verified == "FAILED:x"

    def test_no_response_is_an_error(self):
        r = R.finish(self.prof, "python", TLS13_HANDSHAKE, "1.3", b"", None)
        assert r.error == "no HTTP response" and r.status is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestProbeErrors:
    """No server: failures are reported in the result, never raised."""

    @pytest.mark.parametrize("backend", T.BACKENDS)
    def test_connection_refused(self, backend):
        r = P.probe("127.0.0.1", _closed_port(), "cn.test", "/cn", C.get_profile("api-curl/1.3/cert"), backend=backend, timeout=5)
        assert r.error and r.tls is None and not r.cert_requested and r.status is None and r.backend == backend

    def test_missing_openssl(self):
        r = P.probe(
            "127.0.0.1", 1, "cn.test", "/", C.get_profile("api-curl/1.3/cert"), backend="openssl", openssl="no-such-openssl-x"
        )
        assert r.error == "no-such-openssl-x: command not found"

    @pytest.mark.skipif(not P._HAS_MSG_CALLBACK, reason="the python backend needs ssl's _msg_callback (3.8+)")
    def test_bad_client_cert(self, tmp_path):
        bogus = tmp_path / "c.pem"
        bogus.write_text("not a cert")
        r = P.probe("127.0.0.1", 1, "cn.test", "/", C.get_profile("api-curl/1.3/cert"), client_cert=str(bogus), backend="python")
        assert r.error.startswith("client setup:")

    def test_unknown_backend(self):
        with pytest.raises(ValueError):
            P.probe("127.0.0.1", 1, "cn.test", "/", C.get_profile("api-curl/1.3/cert"), backend="java")

    def test_describe(self):
        import ssl

        exc = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2546)")
        assert P._describe(exc) == "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"
        assert P._describe(socket.timeout("timed out")) == "timeout"
        assert P._describe(ConnectionRefusedError(111, "Connection refused")) == (
            "ConnectionRefusedError: [Errno 111] Connection refused"
        )

    def test_default_backend(self):
        import ssl

        assert P.default_backend() == ("python" if hasattr(ssl.SSLContext, "_msg_callback") else "openssl")

    def test_fallback_when_hook_missing(self, monkeypatch):
        monkeypatch.setattr(P, "_HAS_MSG_CALLBACK", False)
        assert P.default_backend() == "openssl"
        r = P.probe("127.0.0.1", _closed_port(), "cn.test", "/", C.get_profile("api-curl/1.3/cert"), timeout=5)
        assert r.backend == "openssl" and r.error
        r = P.probe("127.0.0.1", 1, "cn.test", "/", C.get_profile("api-curl/1.3/cert"), backend="python")
        assert r.error.startswith("python backend unavailable") and not r.cert_requested
