"""apachectl's pure-ish helpers that need no Apache: where a port is listened on, dump parsing."""

import socket

from dataone_cn_sslverify import apachectl


def test_listening_addresses_sees_real_sockets():
    v4 = socket.socket()
    v4.bind(("127.0.0.2", 0))
    v4.listen()
    wild = socket.socket()
    wild.bind(("0.0.0.0", 0))
    wild.listen()
    try:
        assert apachectl.listening_addresses(v4.getsockname()[1]) == ["127.0.0.2"]
        assert apachectl.listening_addresses(wild.getsockname()[1]) == ["127.0.0.1"]  # wildcard: via loopback
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening
        assert apachectl.listening_addresses(port) == []
        closed.close()
    finally:
        v4.close()
        wild.close()


def test_parse_dump_includes():
    out = "Included configuration files:\n  (*) /etc/apache2/apache2.conf\n    (146) /etc/apache2/mods-enabled/ssl.load\n"
    assert apachectl.parse_dump_includes(out) == ["/etc/apache2/apache2.conf", "/etc/apache2/mods-enabled/ssl.load"]
