#!/usr/bin/python3
"""Bounded HTTPS load generator for the downtime benchmark (stdlib only).

One process plays one traffic class against 127.0.0.1:

* ``--mode new``: every request on a fresh TCP connection and TLS handshake
  (``Connection: close``), no retry: any error is a failed request.
* ``--mode keepalive``: each worker keeps one connection and reuses it. Like
  urllib3 / browsers / Apache HttpClient it (a) checks a pooled connection
  before reuse and reconnects when the server has closed it ("stale"), and
  (b) retries an idempotent GET once on a fresh connection when a *reused*
  connection dies before any response byte ("retried"). Both are counted;
  a request is failed only when it has no successful response after that.

``--profile browser``: browser User-Agents (WebKit/Blink; not asked for a
certificate by either the original or the new policy), no client
certificate, no TLS 1.3 post-handshake auth (browsers do not offer it).
``--profile api``: API-client User-Agents, the harness's trusted client
certificate, post-handshake auth offered (like curl/OpenSSL clients).

Workers alternate TLS 1.3 and TLS 1.2 (worker 0: 1.3, 1: 1.2, ...), so the
per-directory verification is exercised both as PHA and as renegotiation.

Bounded three ways, and stops by itself: ``--duration`` (hard cap, seconds),
``--max-requests`` (total over all workers), and SIGTERM / ``--stop-file``.
Each worker is paced (``--interval`` seconds between request starts; no
catch-up bursts). Results: one JSON document (``--out``) with every request
as ``[t_start, t_end, ok, status, error, reused, stale_before, retried,
verify]`` on the system-wide monotonic clock (comparable across processes).
"""

import argparse
import json
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataone_cn_sslverify import sslcompat  # noqa: E402
from dataone_cn_sslverify.clients import API, BROWSER, CLIENTS  # noqa: E402  (the one client catalogue)

# The load measures reload downtime, so its browsers are the WebKit/Blink ones that neither the original
# webkit-only block nor the policy asks for a certificate (the others get 403 under the original on TLS 1.3:
# that is the incident, not downtime; tests/integration/test_browsers.py shows it).
BROWSER_UAS = tuple(c.user_agent for c in CLIENTS if c.kind == BROWSER and "webkit" in c.user_agent.lower())
API_UAS = tuple(c.user_agent for c in CLIENTS if c.kind == API)
TIMEOUT = 5.0


class Stop:
    def __init__(self, deadline: float, max_requests: int, stop_file: Optional[str]) -> None:
        self.deadline, self.max_requests, self.stop_file = deadline, max_requests, stop_file
        self.flag = threading.Event()
        self.count = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        """Reserve one request; False when any bound is reached."""
        if self.flag.is_set() or time.monotonic() >= self.deadline:
            return False
        if self.stop_file and os.path.exists(self.stop_file):
            self.flag.set()
            return False
        with self.lock:
            if self.count >= self.max_requests:
                return False
            self.count += 1
        return True


def make_context(profile: str, tls: str, ca: str, cert: Optional[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)
    ctx.check_hostname = True
    v = sslcompat.TLSv1_3 if tls == "1.3" else sslcompat.TLSv1_2
    sslcompat.set_range(ctx, minimum=v, maximum=v)
    if profile == "api":
        if cert:
            ctx.load_cert_chain(cert)
        sslcompat.set_post_handshake_auth(ctx, True)
    return ctx


def read_response(ss: ssl.SSLSocket, until_eof: bool) -> Tuple[int, dict, bool, int]:
    """(status, headers, server_closes, bytes_read). Raises on EOF before a whole response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = ss.recv(65536)
        if not chunk:
            raise EOFError("closed before response" if not buf else "closed in headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if until_eof:
        while True:
            chunk = ss.recv(65536)
            if not chunk:
                break
    elif "content-length" in hdrs:
        need = int(hdrs["content-length"]) - len(body)
        while need > 0:
            chunk = ss.recv(min(65536, need))
            if not chunk:
                raise EOFError("closed in body")
            need -= len(chunk)
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = ss.recv(65536)
            if not chunk:
                raise EOFError("closed in chunked body")
            body += chunk
    closes = hdrs.get("connection", "").lower() == "close"
    return status, hdrs, closes, len(buf)


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, EOFError):
        return "eof"
    if isinstance(exc, ssl.SSLEOFError):
        return "tls-eof"
    if isinstance(exc, ssl.SSLError):
        return "tls:" + (exc.reason or type(exc).__name__)
    if isinstance(exc, BrokenPipeError):
        return "broken-pipe"
    if isinstance(exc, OSError):
        return "os:" + (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    return type(exc).__name__


class Worker(threading.Thread):
    def __init__(self, idx: int, a: argparse.Namespace, stop: Stop) -> None:
        super().__init__(daemon=True)
        self.idx, self.a, self.stop = idx, a, stop
        self.tls = "1.3" if idx % 2 == 0 else "1.2"
        self.ctx = make_context(a.profile, self.tls, a.ca, a.cert)
        self.uas = BROWSER_UAS if a.profile == "browser" else API_UAS
        self.records: List[List[Any]] = []
        self.conn: Optional[ssl.SSLSocket] = None
        self.conns_opened = 0

    def request_bytes(self, n: int, keepalive: bool) -> bytes:
        ua = self.uas[(n + self.idx) % len(self.uas)]
        return (f"GET {self.a.path} HTTP/1.1\r\nHost: {self.a.sni}:{self.a.port}\r\nUser-Agent: {ua}\r\n"
                f"Accept: */*\r\nConnection: {'keep-alive' if keepalive else 'close'}\r\n\r\n").encode("latin-1")

    def connect(self) -> ssl.SSLSocket:
        s = socket.create_connection((self.a.host, self.a.port), timeout=TIMEOUT)
        try:
            ss = self.ctx.wrap_socket(s, server_hostname=self.a.sni)
        except BaseException:
            s.close()
            raise
        self.conns_opened += 1
        return ss

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None

    def one_new(self, n: int) -> Tuple[bool, int, str, str]:
        try:
            with self.connect() as ss:
                ss.sendall(self.request_bytes(n, False))
                status, hdrs, _, _ = read_response(ss, until_eof=True)
        except (OSError, EOFError, ValueError, IndexError) as exc:
            return False, 0, error_kind(exc), ""
        return status == 200, status, "" if status == 200 else f"http-{status}", hdrs.get("x-test-client-verify", "")

    def one_keepalive(self, n: int) -> Tuple[bool, int, str, bool, bool, bool, str]:
        stale = False
        if self.conn is not None:
            try:
                r, _, _ = select.select([self.conn], [], [], 0)
            except (OSError, ValueError):
                r = [True]
            if r or self.conn.pending():
                stale = True  # the server closed it (or sent an alert) while idle: reconnect, as urllib3 does
                self.close()
        retried = False
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = self.connect()
                self.conn.sendall(self.request_bytes(n, True))
                status, hdrs, closes, _ = read_response(self.conn, until_eof=False)
                if closes:
                    self.close()
                ok = status == 200
                return (ok, status, "" if ok else f"http-{status}", reused, stale, retried,
                        hdrs.get("x-test-client-verify", ""))
            except (OSError, EOFError, ValueError, IndexError) as exc:
                self.close()
                kind = error_kind(exc)
                if attempt == 0 and reused and kind in ("eof", "reset", "tls-eof", "broken-pipe"):
                    retried = True  # idempotent GET on a connection the server dropped: one retry
                    continue
                return False, 0, kind, reused, stale, retried, ""
        raise AssertionError("unreachable")

    def run(self) -> None:
        interval = self.a.interval
        nxt = time.monotonic() + (interval * self.idx / max(1, self.a.workers))
        n = 0
        while True:
            now = time.monotonic()
            if nxt > now:
                if self.stop.flag.wait(nxt - now):
                    break
            if not self.stop.take():
                break
            t0 = time.monotonic()
            if self.a.mode == "new":
                ok, status, err, verify = self.one_new(n)
                rec = [t0, time.monotonic(), ok, status, err, False, False, False, verify]
            else:
                ok, status, err, reused, stale, retried, verify = self.one_keepalive(n)
                rec = [t0, time.monotonic(), ok, status, err, reused, stale, retried, verify]
            self.records.append(rec)
            n += 1
            nxt = max(nxt + interval, time.monotonic())  # paced, no catch-up burst
        self.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--path", default="/cn/")
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", help="client certificate + key PEM (api profile)")
    p.add_argument("--mode", choices=("new", "keepalive"), required=True)
    p.add_argument("--profile", choices=("browser", "api"), required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between request starts per worker")
    p.add_argument("--duration", type=float, default=300.0, help="hard cap in seconds")
    p.add_argument("--max-requests", type=int, default=200000)
    p.add_argument("--stop-file")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("this load generator only targets the loopback interface")
    a.duration = min(a.duration, 1800.0)
    stop = Stop(time.monotonic() + a.duration, a.max_requests, a.stop_file)
    signal.signal(signal.SIGTERM, lambda *_: stop.flag.set())
    signal.signal(signal.SIGINT, lambda *_: stop.flag.set())
    workers = [Worker(i, a, stop) for i in range(a.workers)]
    t_begin = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        while w.is_alive():
            w.join(0.2)
    doc = {
        "mode": a.mode, "profile": a.profile, "workers": a.workers, "interval": a.interval,
        "t_begin": t_begin, "t_end": time.monotonic(),
        "tls": [w.tls for w in workers],
        "connections_opened": sum(w.conns_opened for w in workers),
        "records": sorted((r for w in workers for r in w.records), key=lambda r: r[0]),
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
