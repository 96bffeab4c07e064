"""Live check of a running Apache vhost: which clients are asked for a certificate.

The change this package makes is only right if, on the live server, browsers
are never asked for a client certificate on ``/cn`` while API clients still
are. Reading the configuration cannot prove that: a per-directory
``SSLVerifyClient`` acts *after* the request headers are read, through a TLS
1.2 renegotiation or a TLS 1.3 post-handshake authentication (PHA), and
``<If>``/``<Else>`` merge order decides which block wins (see
``docs/facts.md``). So this module connects to the server like a client would,
sends a real HTTP/1.1 request with a chosen User-Agent, and watches the TLS
handshake messages for a ``CertificateRequest``.

This is the effect edge; the pure core lives beside it:

* `clients` -- the client catalogue and the matrix rows the probe plays;
* `tlsobserve` -- the request sent, and the classifier that turns observed
  handshake messages into an answer (``s_client`` and HTTP parsing too);
* `results` -- `ProbeResult`, assembled from what a backend observed, and
  its presentation (table, JSON);
* `gate` -- the policy's promise, judged over probe results; `livecheck`
  plans and runs its probes with this module.

`probe` has two interchangeable backends that produce the same list of
`Event` values for the same classifier:

``python`` (default)
    Python's ``ssl`` module with ``SSLContext._msg_callback``, CPython's
    private debug hook (3.8+) that reports every decrypted handshake message.
    In-process, no subprocess, exact per-message information, and the client
    under test *is* Python's ``ssl`` -- the stack ``requests``/``urllib3``
    clients use.
``openssl``
    ``openssl s_client -msg`` with the messages written to a separate file.
    Used automatically when the private hook is missing (another Python
    implementation, or a future CPython that drops it).

`probe_matrix` plays each row of the client matrix with Python's ``ssl``
(or ``openssl s_client``), with and without a client certificate, over
each TLS version the server offers (`server_tls_versions`).
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

from .clients import TLS_VERSIONS, Profile, matrix_profiles
from . import sslcompat
from .results import ProbeResult, finish, skipped_result
from .tlsobserve import BACKENDS, Event, build_request, is_ip, norm_tls, parse_s_client, python_event, s_client_argv
from .records import dataclass

__all__ = [
    "BACKENDS",
    "MATRIX_CONCURRENCY",
    "default_backend",
    "probe",
    "probe_many",
    "parallel_map",
    "Handshake",
    "handshake",
    "server_tls_versions",
    "probe_matrix",
]

# --------------------------------------------------------------------------
# Effect edge


# CPython's private TLS message hook (3.8+). Without it the python backend
# would see no messages at all and report every client as "not asked".
_HAS_MSG_CALLBACK = hasattr(ssl.SSLContext, "_msg_callback")


def default_backend() -> str:
    """"python" when CPython's ``SSLContext._msg_callback`` hook exists, else "openssl"."""
    return "python" if _HAS_MSG_CALLBACK else "openssl"


def probe(
    host: str,
    port: int,
    server_name: str,
    path: str,
    profile: Profile,
    *,
    ca_file: Optional[str] = None,
    client_cert: Optional[str] = None,
    client_key: Optional[str] = None,
    timeout: float = 10.0,
    backend: Optional[str] = None,
    openssl: str = "openssl",
    verify_headers: Sequence[str] = (),
    contexts: Optional["ContextCache"] = None,
) -> ProbeResult:
    """Connect to ``host:port`` as ``profile``, ``GET path``, and report.

    SNI and the Host header are ``server_name``. Without ``ca_file`` the
    server certificate is not verified (the probe checks our own local
    server, whose certificate need not name the address we connect to); with
    it, chain and name are verified. The client certificate is presented only
    if ``profile.cert`` and ``client_cert`` is given. Never raises for
    network or TLS failures: they land in ``ProbeResult.error``.
    ``verify_headers``: extra response header names, tried before
    `VERIFY_HEADERS`, that carry the server's SSL_CLIENT_VERIFY.
    ``contexts``: share client contexts between probes (`probe_many`).
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    request = build_request(path, server_name, port, profile.user_agent, profile.headers)
    attempt = _Attempt(host, port, server_name, request, profile, ca_file, client_cert, client_key, timeout,
                       contexts)
    result = _probe_python(attempt) if backend == "python" else _probe_openssl(attempt, openssl)
    events, tls, response, error = result
    return finish(profile, backend, events, tls, response, error, verify_headers)


def probe_many(
    host: str,
    port: int,
    server_name: str,
    items: Sequence[Tuple[str, Profile, Optional[str], Optional[str]]],
    *,
    concurrency: Optional[int] = None,
    contexts: Optional["ContextCache"] = None,
    **kwargs: Any,
) -> List[ProbeResult]:
    """`probe` for each ``(path, profile, client_cert, client_key)``, concurrently, results in order.

    Each probe is its own connection: a few at a time keep the live check
    short (it sits between the reload and the commit) without loading the
    server. ``contexts``: client contexts made beforehand (`livecheck.Preparation`).
    """
    return parallel_map(_prober(host, port, server_name, contexts, kwargs), list(items),
                        concurrency or MATRIX_CONCURRENCY)


def _prober(host: str, port: int, server_name: str, contexts: Optional["ContextCache"],
            kwargs: Dict[str, Any]) -> Callable[[Tuple[str, Profile, Optional[str], Optional[str]]], ProbeResult]:
    """`probe` of one ``(path, profile, client_cert, client_key)`` item, the contexts shared by all the items."""
    shared = contexts if contexts is not None else ContextCache()  # one per stack and certificate, not per probe

    def one(item: Tuple[str, Profile, Optional[str], Optional[str]]) -> ProbeResult:
        path, profile, cert, key = item
        return probe(host, port, server_name, path, profile, client_cert=cert, client_key=key, contexts=shared,
                     **kwargs)
    return one


_T = TypeVar("_T")
_R = TypeVar("_R")


def parallel_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> List[_R]:
    """``[fn(x) for x in items]`` on up to ``workers`` threads, results in order.

    A few threads over a shared index rather than ``concurrent.futures``:
    its import alone costs about as much as a probe, and the command pays
    it on every run. ``fn`` must not raise (the probes never do); if it
    does, the first exception is raised here after every thread ended.
    """
    results: List[Any] = [None] * len(items)
    errors: List[BaseException] = []
    lock = threading.Lock()
    nxt = [0]

    def work() -> None:
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items) or errors:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)
                return

    n = max(1, min(workers, len(items)))
    if n == 1:
        work()
    else:
        threads = [threading.Thread(target=work, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


@dataclass(frozen=True)
class Handshake:
    """A bare TLS handshake (no request): did it complete, which version and ALPN protocol."""

    ok: bool
    tls: Optional[str] = None
    alpn: Optional[str] = None
    error: Optional[str] = None


def handshake(
    host: str,
    port: int,
    server_name: Optional[str],
    *,
    tls: Optional[str] = None,
    alpn: Sequence[str] = (),
    timeout: float = 5.0,
) -> Handshake:
    """One TLS handshake with Python's ``ssl``, nothing sent after it.

    ``server_name``: SNI (None or an IP address: no SNI). ``tls`` pins the
    version; ``alpn`` offers these protocols (e.g. ``("h2", "http/1.1")``).
    The server certificate is not verified (our own local server).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls is not None:
        _pin(ctx, tls)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    sni = server_name if server_name and not is_ip(server_name) else None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=sni) as t:
                return Handshake(True, norm_tls(t.version()), t.selected_alpn_protocol())
    except (ssl.SSLError, OSError) as exc:
        return Handshake(False, error=_describe(exc))


def versions_and_probes(
    host: str,
    port: int,
    server_name: str,
    items: Sequence[Tuple[str, Profile, Optional[str], Optional[str]]],
    *,
    shake_timeout: float = 5.0,
    concurrency: Optional[int] = None,
    contexts: Optional["ContextCache"] = None,
    **kwargs: Any,
) -> Tuple[Dict[str, Handshake], List[ProbeResult]]:
    """`server_tls_versions` and `probe_many` in one pool, the pinned handshakes first.

    For a caller that plans its probes for the versions the server is
    expected to offer and checks afterwards that it does (`livecheck`): one
    round of connections fewer before the probes start.
    """
    jobs: List[Tuple[str, Any]] = [("shake", v) for v in TLS_VERSIONS] + [("probe", it) for it in items]
    probe_one = _prober(host, port, server_name, contexts, kwargs)

    def one(job: Tuple[str, Any]) -> Any:
        kind, arg = job
        if kind == "shake":
            return handshake(host, port, server_name, tls=arg, timeout=shake_timeout)
        return probe_one(arg)

    done = parallel_map(one, jobs, concurrency or MATRIX_CONCURRENCY)
    return dict(zip(TLS_VERSIONS, done[:len(TLS_VERSIONS)])), done[len(TLS_VERSIONS):]


def server_tls_versions(host: str, port: int, server_name: Optional[str], timeout: float = 5.0) -> Dict[str, Handshake]:
    """For each TLS version the probe knows, a pinned handshake with SNI ``server_name`` (concurrently)."""
    shakes = parallel_map(lambda v: handshake(host, port, server_name, tls=v, timeout=timeout), TLS_VERSIONS,
                          len(TLS_VERSIONS))
    return dict(zip(TLS_VERSIONS, shakes))


def probe_matrix(
    host: str,
    port: int,
    server_name: str,
    path: str,
    profiles: Optional[Iterable[Profile]] = None,
    *,
    client_cert: Optional[str] = None,
    client_key: Optional[str] = None,
    timeout: float = 10.0,
    **kwargs: Any,
) -> List[ProbeResult]:
    """Probe the client matrix against a live vhost.

    ``profiles`` default to `matrix_profiles`, with the certificate rows
    only when ``client_cert`` is given. The TLS versions the server offers
    (for SNI ``server_name``) are found first; rows pinned to a version it
    refuses are returned as skipped, saying so, instead of as failures. If
    the server offers no version at all (unreachable), every row is probed
    anyway so that each carries the error.
    """
    if profiles is None:
        profiles = matrix_profiles(certs=(False, True) if client_cert else (False,))
    rows = list(profiles)
    offered = server_tls_versions(host, port, server_name, timeout=min(timeout, 5.0))
    reachable = any(h.ok for h in offered.values())

    def one(p: Profile) -> ProbeResult:
        h = offered.get(p.tls) if p.tls else None
        if reachable and h is not None and not h.ok:
            return skipped_result(p, f"the server does not offer TLS {p.tls} for {server_name} ({h.error})")
        return probe(host, port, server_name, path, p, client_cert=client_cert, client_key=client_key,
                     timeout=timeout, **kwargs)

    # Rows are independent connections: a few at a time keeps the live check short
    # (it sits between the reload and the commit) without loading the server.
    return parallel_map(one, rows, MATRIX_CONCURRENCY)


def _concurrency() -> int:
    """Connections the probe opens at once: two per core it may run on, between 2 and 8.

    The probes and Apache share this host's cores, and a probe is mostly
    TLS handshake CPU on both sides; beyond about two per core the threads
    only contend (for the GIL, which every TLS message's callback takes):
    on two cores, 4 at a time finished the live check's 28 probes in about
    55 ms where 8 took about 65 ms (bench/RESULTS.md, part 2).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(2, min(8, 2 * cores))


#: Connections the probe opens at once.
MATRIX_CONCURRENCY = _concurrency()


@dataclass(frozen=True)
class _Attempt:
    """One probe as either backend makes it: where to connect, the request to send, as which client."""

    host: str
    port: int
    server_name: str
    request: bytes
    profile: Profile
    ca_file: Optional[str]
    client_cert: Optional[str]
    client_key: Optional[str]
    timeout: float
    contexts: Optional["ContextCache"] = None


# What a backend observed: events, negotiated TLS version, response bytes, error.
_Raw = Tuple[List[Event], Optional[str], bytes, Optional[str]]


def _no_exchange(error: str) -> _Raw:
    """What a backend reports when it could not even start: no messages, no version, no response."""
    return [], None, b"", error

_OP_NO_RENEGOTIATION = sslcompat.OP_NO_RENEGOTIATION


def _pin(ctx: ssl.SSLContext, tls: Optional[str]) -> None:
    """Speak only TLS ``tls`` ("1.2"/"1.3"), or at least TLS 1.2 when None (`sslcompat`: Python 3.6 too)."""
    pin = sslcompat.TLSv1_3 if tls == "1.3" else sslcompat.TLSv1_2
    sslcompat.set_range(ctx, minimum=pin, maximum=pin if tls is not None else None)


def _python_context(
    profile: Profile, ca_file: Optional[str], client_cert: Optional[str], client_key: Optional[str]
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    _pin(ctx, profile.tls)
    # Explicit both ways: http.client turns PHA on when a certificate is loaded.
    sslcompat.set_post_handshake_auth(ctx, bool(profile.pha))
    if not profile.renegotiation:
        # Answer a HelloRequest with a no_renegotiation alert (IE11 on Windows 7, Go's default).
        ctx.options |= _OP_NO_RENEGOTIATION
    if profile.cert and client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    # Only HTTP/1.1: HTTP/2 forbids renegotiation and would hide the answer.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _describe(exc: BaseException) -> str:
    """A one-line description of a network or TLS failure."""
    if isinstance(exc, ssl.SSLError):
        # "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2546)"
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc)) or exc.__class__.__name__
    if isinstance(exc, socket.timeout):
        return "timeout"
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


#: Where `_on_message` puts the messages of the connection the current thread is making.
_LISTENER = threading.local()


def _on_message(conn: Any, direction: Any, version: Any, content_type: Any, msg_type: Any, data: bytes) -> None:
    """``SSLContext._msg_callback``: OpenSSL calls it in the thread that drives the connection."""
    events = getattr(_LISTENER, "events", None)
    if events is not None:
        ev = python_event(direction, content_type, data)
        if ev is not None:
            events.append(ev)


class ContextCache:
    """Client contexts shared by the probes of one run, one per (stack, certificate, CA file).

    Creating a context and loading a key costs more than a handshake on
    localhost; a context serves any number of connections, from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: Dict[Tuple[Any, ...], ssl.SSLContext] = {}

    def get(self, profile: Profile, ca_file: Optional[str], cert: Optional[str], key: Optional[str]) -> ssl.SSLContext:
        ident = (profile.tls, profile.pha, profile.renegotiation, ca_file,
                 cert if profile.cert else None, key if profile.cert else None)
        with self._lock:
            ctx = self._made.get(ident)
            if ctx is None:
                ctx = _python_context(profile, ca_file, cert, key)
                ctx._msg_callback = _on_message  # type: ignore[attr-defined]
                self._made[ident] = ctx
            return ctx


def _probe_python(a: _Attempt) -> _Raw:
    """Python ``ssl`` backend: events from ``SSLContext._msg_callback``."""
    if not _HAS_MSG_CALLBACK:
        return _no_exchange("python backend unavailable: no ssl.SSLContext._msg_callback (use backend='openssl')")
    events: List[Event] = []
    try:
        if a.contexts is not None:
            ctx = a.contexts.get(a.profile, a.ca_file, a.client_cert, a.client_key)
        else:
            ctx = _python_context(a.profile, a.ca_file, a.client_cert, a.client_key)
            ctx._msg_callback = _on_message  # type: ignore[attr-defined]
    except (OSError, ssl.SSLError, ValueError) as exc:
        return _no_exchange(f"client setup: {_describe(exc)}")
    _LISTENER.events = events  # the messages of this thread's connection land here (see _on_message)
    try:
        return _exchange(a, ctx, events)
    finally:
        _LISTENER.events = None


def _exchange(a: _Attempt, ctx: ssl.SSLContext, events: List[Event]) -> _Raw:
    """Connect, handshake, send the request, read until the server closes; ``events`` fill meanwhile."""
    tls: Optional[str] = None
    chunks: List[bytes] = []
    error: Optional[str] = None
    deadline = time.monotonic() + a.timeout
    try:
        sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    except OSError as exc:
        return _no_exchange(f"connect {a.host}:{a.port}: {_describe(exc)}")
    try:
        with ctx.wrap_socket(sock, server_hostname=a.server_name or None) as tls_sock:
            tls = norm_tls(tls_sock.version())
            tls_sock.sendall(a.request)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout("timed out")
                tls_sock.settimeout(remaining)
                data = tls_sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except (ssl.SSLError, OSError) as exc:
        error = _describe(exc)
    finally:
        sock.close()
    return list(events), tls, b"".join(chunks), error


def _probe_openssl(a: _Attempt, openssl: str) -> _Raw:
    """``openssl s_client -msg`` backend: events parsed from the message log."""
    exe = shutil.which(openssl) if os.sep not in openssl else openssl
    if not exe:
        return _no_exchange(f"{openssl}: command not found")
    fd, msgfile = tempfile.mkstemp(prefix="dataone-cn-sslverify-probe-", suffix=".msg")
    os.close(fd)
    try:
        argv = s_client_argv(
            a.host, a.port, a.server_name, a.profile, msgfile,
            ca_file=a.ca_file, client_cert=a.client_cert, client_key=a.client_key, openssl=exe,
        )
        env = dict(os.environ)
        env.setdefault("LC_ALL", "C")
        timed_out = False
        try:
            proc = subprocess.run(
                argv, input=a.request, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=a.timeout, env=env
            )
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, stderr, rc = exc.stdout or b"", exc.stderr or b"", None
            timed_out = True
        with open(msgfile, encoding="latin-1") as fh:
            msgs = fh.read()
    finally:
        try:
            os.unlink(msgfile)
        except OSError:
            pass
    events, tls, response, error = parse_s_client(stdout, msgs, stderr.decode("latin-1"), rc)
    if timed_out:
        error = "timeout" if error is None else f"timeout; {error}"
    return events, tls, response, error
