"""`sslcompat`: version pins that take effect on the wire, on 3.6 (``OP_NO_*``) as on 3.7+
(``minimum_version``): real handshakes over loopback between pinned Python clients and servers."""

import socket
import ssl
import subprocess
import threading
from typing import Iterator, Optional, Tuple

import pytest

from dataone_cn_sslverify import sslcompat


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, str]:
    d = tmp_path_factory.mktemp("sslcompat")
    key, crt = str(d / "k.pem"), str(d / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", key, "-out", crt], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return crt, key


def server_ctx(cert: Tuple[str, str], minimum: Optional[str] = None, maximum: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    sslcompat.set_range(ctx, minimum=minimum, maximum=maximum)
    return ctx


def client_ctx(minimum: Optional[str] = None, maximum: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sslcompat.set_range(ctx, minimum=minimum, maximum=maximum)
    return ctx


@pytest.fixture
def serve() -> Iterator[object]:
    """Starts a one-connection TLS server with a given context; yields its port."""
    threads = []

    def start(ctx: ssl.SSLContext) -> int:
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(10)

        def run() -> None:
            try:
                conn, _ = lsock.accept()
                with ctx.wrap_socket(conn, server_side=True) as t:
                    t.sendall(b"x")
            except (OSError, ssl.SSLError):
                pass
            finally:
                lsock.close()
        th = threading.Thread(target=run, daemon=True)
        th.start()
        threads.append(th)
        return lsock.getsockname()[1]
    yield start
    for th in threads:
        th.join(10)


def handshake(ctx: ssl.SSLContext, port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock) as t:
            t.recv(1)
            return str(t.version())


@pytest.mark.parametrize("pin,wire", [(sslcompat.TLSv1_2, "TLSv1.2"), (sslcompat.TLSv1_3, "TLSv1.3")])
def test_client_pin_is_what_the_wire_negotiates(cert, serve, pin, wire):
    assert handshake(client_ctx(pin, pin), serve(server_ctx(cert))) == wire


def test_server_pin_is_what_the_wire_negotiates(cert, serve):
    assert handshake(client_ctx(), serve(server_ctx(cert, maximum=sslcompat.TLSv1_2))) == "TLSv1.2"


def test_disjoint_pins_fail_the_handshake(cert, serve):
    port = serve(server_ctx(cert, maximum=sslcompat.TLSv1_2))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(client_ctx(minimum=sslcompat.TLSv1_3), port)


def test_pins_read_back_and_accumulate():
    ctx = client_ctx()
    # Unpinned values depend on the Python (3.10+ defaults a client's minimum to TLS 1.2): names, not enums.
    assert sslcompat.maximum_version(ctx) in (sslcompat.MAXIMUM_SUPPORTED, sslcompat.TLSv1_3)
    sslcompat.set_range(ctx, minimum=sslcompat.TLSv1_2)
    sslcompat.set_range(ctx, maximum=sslcompat.TLSv1_3)
    assert (sslcompat.minimum_version(ctx), sslcompat.maximum_version(ctx)) == (sslcompat.TLSv1_2, sslcompat.TLSv1_3)


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="unknown TLS version"):
        sslcompat.set_range(client_ctx(), minimum="TLSv9")


def test_post_handshake_auth_round_trip():
    ctx = client_ctx()
    if not sslcompat.has_post_handshake_auth(ctx):
        with pytest.raises(ValueError):
            sslcompat.set_post_handshake_auth(ctx, True)
        return
    sslcompat.set_post_handshake_auth(ctx, True)
    assert sslcompat.post_handshake_auth(ctx) is True
    sslcompat.set_post_handshake_auth(ctx, False)
    assert sslcompat.post_handshake_auth(ctx) is False
