"""The two web servers around the CN in the browser tests: the web app's origin and the API backend.

Why two small servers and not static files: the incident is a *cross-origin*
credentialed call, so the page must come from another origin than the CN
(here ``http://127.0.0.1:<port>``), and it must tell the test what the
browser saw -- the page reports to its own origin, which the test reads.
Behind the CN vhost, ``/cn/v2/...`` goes to Tomcat in production
(``ProxyPassMatch ... ajp://localhost:8009``); ``ApiBackend`` stands in for
it over plain HTTP so that the preflight ``OPTIONS`` and the ``GET`` get the
answers Tomcat gives (200; the CORS headers come from the vhost).

Both servers bind 127.0.0.1 only, on a free port, in a daemon thread, and
``close()`` shuts them down.
"""

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, Dict, List, Optional

__all__ = ["ApiBackend", "OriginServer", "route_api_to", "SUBJECT", "ACCOUNT_MARKER"]

#: The subject MetacatUI asks the CN about (an ORCID, as for a logged-in user).
SUBJECT = "http://orcid.org/0000-0002-1825-0097"
#: A string in the backend's GET answer, so a report can show the body came through.
ACCOUNT_MARKER = "subjectInfo"

_ACCOUNT_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ns2:subjectInfo xmlns:ns2="http://ns.dataone.org/service/types/v1">'
    "<person><subject>%s</subject><givenName>Test</givenName><familyName>User</familyName></person>"
    "</ns2:subjectInfo>\n" % SUBJECT
)


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser killed mid-connection resets it: not an error of the test."""


class _Base:
    """A threaded HTTP server on 127.0.0.1:<free port> running in a daemon thread."""

    def __init__(self, handler: type) -> None:
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.owner = self  # type: ignore[attr-defined]
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "_Base":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# ---------------------------------------------------------------- the CN's backend (Tomcat stand-in)


class _ApiHandler(_Quiet):
    def _record(self) -> None:
        owner: ApiBackend = self.server.owner  # type: ignore[attr-defined]
        with owner.lock:
            owner.requests.append({
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "origin": self.headers.get("Origin"),
                "user_agent": self.headers.get("User-Agent"),
            })

    def do_OPTIONS(self) -> None:  # noqa: N802 -- http.server's naming
        self._record()
        self._send(200, b"", "text/plain", {"Allow": "GET, HEAD, POST, PUT, DELETE, OPTIONS"})

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        if self.path.startswith("/cn/v2/accounts/"):
            self._send(200, _ACCOUNT_XML.encode(), "text/xml")
        else:
            self._send(404, b"<error>not found</error>\n", "text/xml")


class ApiBackend(_Base):
    """Answers ``/cn/v2/accounts/<subject>`` like the CN's Tomcat: 200 to OPTIONS and GET.

    ``requests`` lists what reached it (method, path, Authorization, Origin,
    User-Agent): a request Apache refused never gets here.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: List[Dict[str, Optional[str]]] = []
        super().__init__(_ApiHandler)

    def seen(self) -> List[Dict[str, Optional[str]]]:
        with self.lock:
            return list(self.requests)

    def clear(self) -> None:
        with self.lock:
            del self.requests[:]


def route_api_to(inst: Any, backend: ApiBackend) -> None:
    """Point the fixture vhost's ``ProxyPassMatch`` to Tomcat at ``backend`` (plain HTTP, mod_proxy_http).

    Changes only the proxy target, before the instance starts; the
    client-verification block is untouched, so the policy code sees the
    vhost it would see on a CN.
    """
    old = b"ajp://localhost:8009/cn/$1"
    data = inst.vhost_bytes()
    if data.count(old) != 1:
        raise ValueError("the vhost has no single %r to reroute" % old.decode())
    inst.write_vhost(data.replace(old, b"http://127.0.0.1:%d/cn/$1" % backend.port))


# ---------------------------------------------------------------- the web app's origin (MetacatUI stand-in)

#: What MetacatUI does when a logged-in user opens a page: a credentialed
#: cross-origin XMLHttpRequest to the CN's accounts API with its JWT as a
#: bearer token (a non-safelisted header, so the browser sends a preflight
#: OPTIONS first). The outcome goes back to this page's own origin.
_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>MetacatUI stand-in</title></head>
<body><p>dataone-cn-sslverify browser test</p>
<script>
"use strict";
var target = %(target)s;
var report = function (out) {
  var r = new XMLHttpRequest();
  r.open("POST", "/report", true);
  r.setRequestHeader("Content-Type", "application/json");
  r.send(JSON.stringify(out));
};
var out = {ua: navigator.userAgent, target: target, events: []};
var xhr = new XMLHttpRequest();
xhr.open("GET", target, true);
xhr.withCredentials = true;
xhr.setRequestHeader("Authorization", "Bearer %(token)s");
xhr.timeout = %(timeout_ms)d;
var done = false;
var finish = function (ev) {
  out.events.push(ev);
  if (done) { return; }
  done = true;
  out.status = xhr.status;
  out.body = (xhr.responseText || "").slice(0, 300);
  out.acao = xhr.getResponseHeader("Access-Control-Allow-Origin");
  report(out);
};
xhr.onload = function () { finish("load"); };
xhr.onerror = function () { finish("error"); };
xhr.ontimeout = function () { finish("timeout"); };
xhr.onabort = function () { finish("abort"); };
try { xhr.send(); } catch (e) { out.exception = String(e); finish("exception"); }
</script></body></html>
"""


class _OriginHandler(_Quiet):
    def do_GET(self) -> None:  # noqa: N802
        owner: OriginServer = self.server.owner  # type: ignore[attr-defined]
        if self.path == "/" or self.path.startswith("/?"):
            self._send(200, owner.page().encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        owner: OriginServer = self.server.owner  # type: ignore[attr-defined]
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.path == "/report":
            try:
                owner.reports.put(json.loads(raw.decode("utf-8")))
            except ValueError:
                owner.reports.put({"unparsable": raw.decode("utf-8", "replace")})
            self._send(204, b"", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")


class OriginServer(_Base):
    """``http://127.0.0.1:<port>/``: the page that makes the CORS call, and ``/report`` for its outcome."""

    def __init__(self, target: str, token: str = "eyJhbGciOiJSUzI1NiJ9.test.token", timeout_ms: int = 15000) -> None:
        self.target = target
        self.token = token
        self.timeout_ms = timeout_ms
        self.reports: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        super().__init__(_OriginHandler)

    @property
    def origin(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def url(self) -> str:
        return self.origin + "/"

    def page(self) -> str:
        return _PAGE % {"target": json.dumps(self.target), "token": self.token, "timeout_ms": self.timeout_ms}

    def wait_report(self, timeout: float) -> Optional[Dict[str, Any]]:
        """The page's report, or None if none came within ``timeout`` seconds."""
        try:
            return self.reports.get(timeout=timeout)
        except queue.Empty:
            return None
