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


def test_the_kernels_two_answers_agree(monkeypatch):
    """sock_diag (netlink, listening sockets only) and /proc/net/tcp{,6} (every socket) name the same listeners."""
    socks = []
    for family, addr in ((socket.AF_INET, "127.0.0.2"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::1")):
        try:
            s = socket.socket(family)
            s.bind((addr, 0))
            s.listen()
            socks.append(s)
        except OSError:  # no IPv6 here
            pass
    busy = socket.create_connection(socks[0].getsockname()[:2])  # an established one: not a listener
    try:
        via_netlink = apachectl._listening_netlink()
        assert via_netlink is not None, "NETLINK_SOCK_DIAG unavailable"
        monkeypatch.setattr(apachectl, "_listening_netlink", lambda: None)
        via_proc = apachectl.listening_sockets()
        assert {p: sorted(a) for p, a in via_netlink.items()} == {p: sorted(a) for p, a in via_proc.items()}
        for s in socks:
            port = s.getsockname()[1]
            want = {"127.0.0.2": "127.0.0.2", "0.0.0.0": "127.0.0.1", "::1": "::1"}[s.getsockname()[0]]
            assert via_netlink[port] == [want]
        assert busy.getsockname()[1] not in via_netlink
    finally:
        busy.close()
        for s in socks:
            s.close()


def test_parse_dump_includes():
    out = "Included configuration files:\n  (*) /etc/apache2/apache2.conf\n    (146) /etc/apache2/mods-enabled/ssl.load\n"
    assert apachectl.parse_dump_includes(out) == ["/etc/apache2/apache2.conf", "/etc/apache2/mods-enabled/ssl.load"]
