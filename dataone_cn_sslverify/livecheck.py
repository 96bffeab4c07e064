"""The live check after a change: make the probes of `gate.plan`, judge them with `gate.judge`.

This is the effect edge of the gate, and the only one: ``apply``/``revert``
(through `transaction`), ``probe`` and the Ansible role (through ``probe
--json``) all get their verdict here. It finds what the plan needs from the
live server and the configuration -- the TLS versions the vhost offers (two
pinned handshakes), the paths of the vhost that require a client
certificate (from the configuration as Apache loads it), a trusted client
certificate when the operator configured one, and a throwaway certificate
from an unknown CA -- then probes, concurrently. `probe_target` says where
it connects: the vhost's own address, or where Apache really listens.

A trusted certificate is the operator's: ``DATAONE_CN_SSLVERIFY_CLIENT_CERT``
(a PEM file with the certificate, and the key unless
``DATAONE_CN_SSLVERIFY_CLIENT_KEY`` names it), for example the CN's own
node certificate. Without it the gate checks that API clients are asked,
not that they are verified, and says so.
"""

import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from . import apachectl, gate, proc
from .locate import probe_target  # noqa: F401  (where the check connects; re-exported)
from .clients import CLIENTS, TLS_VERSIONS, Client
from .records import dataclass, field

if TYPE_CHECKING:
    from .policy import Assessment

__all__ = ["CERT_ENV", "KEY_ENV", "Outcome", "Preparation", "probe_target", "trusted_client_cert", "required_paths_of", "mode_for", "run",
           "run_for_vhost"]

CERT_ENV = "DATAONE_CN_SSLVERIFY_CLIENT_CERT"
KEY_ENV = "DATAONE_CN_SSLVERIFY_CLIENT_KEY"
OPENSSL_TIMEOUT = 20.0


@dataclass
class Outcome:
    """The verdict, what each probe saw, and what the check could not do."""

    verdict: gate.Verdict
    seen: List[gate.Seen] = field(default_factory=list)
    offered: Tuple[str, ...] = ()
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        doc = self.verdict.to_json()
        doc["offered"] = list(self.offered)
        doc["notes"] = list(self.notes)
        return doc


def trusted_client_cert(env: Optional[Dict[str, str]] = None) -> Tuple[Optional[Tuple[str, Optional[str]]], List[str]]:
    """The operator's trusted client certificate (cert, key) from the environment, and notes on why not."""
    env = dict(os.environ) if env is None else env
    cert, key = env.get(CERT_ENV) or None, env.get(KEY_ENV) or None
    if not cert:
        return None, []
    for what, path in (("certificate", cert), ("key", key)):
        if path and not os.access(path, os.R_OK):
            return None, [f"{CERT_ENV if what == 'certificate' else KEY_ENV}={path}: the client {what} cannot be "
                          "read: verification with a trusted certificate not checked"]
    return (cert, key), []


def _untrusted_cert(workdir: str, openssl: str = "openssl") -> Tuple[Optional[Tuple[str, str]], Optional[str]]:
    """A fresh self-signed client certificate (an unknown CA to the server), or why there is none."""
    exe = shutil.which(openssl, path=os.environ.get("PATH") or os.defpath)
    if not exe:
        return None, f"{openssl}: command not found: the untrusted-certificate probes were not made"
    cert, key = os.path.join(workdir, "untrusted.crt"), os.path.join(workdir, "untrusted.key")
    argv = [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=dataone-cn-sslverify untrusted probe", "-days", "2", "-keyout", key, "-out", cert]
    p = proc.run(argv, timeout=OPENSSL_TIMEOUT)
    if p.error:
        return None, f"openssl req: {p.error}: the untrusted-certificate probes were not made"
    if p.returncode != 0:
        return None, f"openssl req failed ({p.stderr.strip()[-200:]}): the untrusted-certificate probes were not made"
    return (cert, key), None


def required_paths_of(vhost_file: str, vhost_line: int) -> Tuple[List[str], List[str]]:
    """Paths of the CN vhost that require a client certificate, from its file as Apache loads it.

    Returns (paths, notes). The vhost file is read through
    `loaded.expand_config` (its Includes expanded, so a policy snippet or
    ``jk_mount`` counts); the ``<IfModule>`` sections a CN vhost uses are
    taken as loaded. The main server's configuration is not read: only the
    vhost's own sections are the vhost's promise.
    """
    from .loaded import BUILTIN_MODULES, expand_config
    from .scope import required_paths, scoped

    file = os.path.realpath(vhost_file)
    view = expand_config(file, apachectl.confdir(), env=dict(os.environ), builtin=BUILTIN_MODULES + _VHOST_MODULES)
    paths, unknown = required_paths(scoped(view, file, vhost_line))
    notes = [f"{where}: a section that requires a client certificate, but no request path can be derived from "
             "it: not probed" for where in unknown]
    notes += [f"reading the vhost for required paths: {p}" for p in view.problems]
    return paths, notes


#: A vhost file read on its own: the modules a CN vhost's ``<IfModule>`` sections test count as loaded.
_VHOST_MODULES = ("ssl", "headers", "rewrite", "proxy", "setenvif", "expires", "jk")


def mode_for(op: str) -> str:
    """The promise after ``op``: the policy after apply, an original block after revert."""
    return gate.ORIGINAL if op == "revert" else gate.POLICY


class Preparation:
    """What the live check needs that the reload does not change: made once, before the reload.

    The required paths (read from the files just written), the operator's
    trusted certificate, a throwaway certificate from an unknown CA (``openssl
    req``), the probe stack's import and its client contexts: about a fifth of
    the check's time. The transaction makes it in a thread right after its
    write, while its main thread waits for Apache (``transaction._prepare_probe``).
    `close` always: it removes the throwaway certificate's directory.
    """

    def __init__(self, vhost_file: str, vhost_line: int, clients: Sequence[Client] = CLIENTS) -> None:
        from . import probe  # the ssl stack

        self.workdir = tempfile.mkdtemp(prefix="dataone-cn-sslverify-check-")
        try:
            self.required, self.notes = required_paths_of(vhost_file, vhost_line)
            self.trusted, cert_notes = trusted_client_cert()
            self.notes += cert_notes
            self.untrusted, why = _untrusted_cert(self.workdir)
            if why:
                self.notes.append(why)
            # Every client context a plan over all versions can use (one per stack and certificate);
            # none where the probes are openssl s_client processes (Python without _msg_callback: 3.6).
            self.contexts = probe.ContextCache() if probe.default_backend() == "python" else None
            if self.contexts is None:
                return
            certs = {gate.TRUSTED: self.trusted or (None, None), gate.UNTRUSTED: self.untrusted or (None, None),
                     gate.NOCERT: (None, None)}
            for c in gate.plan(TLS_VERSIONS, self.required, trusted_cert=self.trusted is not None, clients=clients):
                cert, key = certs[c.cert]
                try:
                    self.contexts.get(c.profile, None, cert, key)
                except (OSError, ValueError, probe.ssl.SSLError):
                    pass  # the probe itself makes it again and reports why it cannot
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def run(
    mode: str,
    host: str,
    port: int,
    server_name: str,
    *,
    required: Sequence[str] = (),
    trusted: Optional[Tuple[str, Optional[str]]] = None,
    notes: Sequence[str] = (),
    clients: Sequence[Client] = CLIENTS,
    timeout: float = 10.0,
    backend: Optional[str] = None,
    verify_headers: Sequence[str] = (),
    mitigation: Optional[str] = None,
    prepared: Optional[Preparation] = None,
) -> Outcome:
    """Probe the live vhost at ``host:port`` (SNI ``server_name``) and judge the promise of ``mode``.

    ``prepared``: a finished `Preparation` (its required paths, certificates,
    notes and client contexts replace ``required``, ``trusted`` and ``notes``).
    """
    from . import probe  # the ssl stack: only when probing (transaction imports this module for probe_target)

    if prepared is not None:
        return _run(mode, host, port, server_name, prepared.required, prepared.trusted, prepared.notes, clients,
                    timeout, backend, verify_headers, mitigation, (prepared.untrusted, None), prepared.contexts)
    workdir = tempfile.mkdtemp(prefix="dataone-cn-sslverify-check-")
    try:
        made: List[Tuple[Optional[Tuple[str, str]], Optional[str]]] = []
        maker = threading.Thread(target=lambda: made.append(_untrusted_cert(workdir)), daemon=True)
        maker.start()  # the throwaway certificate is made while the versions are probed
        shakes = probe.server_tls_versions(host, port, server_name, timeout=min(timeout, 5.0))
        maker.join(OPENSSL_TIMEOUT + 5)
        untrusted = made[0] if made else (None, "openssl req did not finish: the untrusted-certificate probes "
                                                "were not made")
        return _run(mode, host, port, server_name, required, trusted, notes, clients, timeout, backend,
                    verify_headers, mitigation, untrusted, None, shakes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(mode: str, host: str, port: int, server_name: str, required: Sequence[str],
         trusted: Optional[Tuple[str, Optional[str]]], notes: Sequence[str], clients: Sequence[Client], timeout: float,
         backend: Optional[str], verify_headers: Sequence[str], mitigation: Optional[str],
         untrusted_why: Tuple[Optional[Tuple[str, str]], Optional[str]], contexts: Any,
         shakes: Optional[Dict[str, Any]] = None) -> Outcome:
    """`run` once the certificates are there: the versions offered, the plan, the probes, the verdict.

    Without ``shakes`` (the prepared path, after a reload) the plan for every
    version -- what a CN offers -- is probed in one pool with the two pinned
    handshakes that tell which versions the server offers (`versions_and_probes`);
    when one is missing (the TLS 1.2 opt-in), the plan is made again for the
    versions offered and only the probes it adds are made. Either way the
    verdict is over the plan for the versions offered, as with ``shakes``.
    """
    from . import probe

    out_notes = list(notes)
    untrusted, why = untrusted_why
    certs = {gate.TRUSTED: trusted or (None, None), gate.UNTRUSTED: untrusted or (None, None),
             gate.NOCERT: (None, None)}

    def planned(versions: Sequence[str]) -> List[gate.Check]:
        checks = gate.plan(versions, required, trusted_cert=trusted is not None, clients=clients)
        return [c for c in checks if untrusted is not None or c.cert != gate.UNTRUSTED]

    def items(checks: Sequence[gate.Check]) -> List[Any]:
        return [(c.path, c.profile) + tuple(certs[c.cert]) for c in checks]

    kw = dict(timeout=timeout, backend=backend, verify_headers=verify_headers, contexts=contexts)
    done: Dict[gate.Check, Any] = {}
    if shakes is None:
        guess = planned(TLS_VERSIONS)
        shakes, results = probe.versions_and_probes(host, port, server_name, items(guess),
                                                    shake_timeout=min(timeout, 5.0), **kw)  # type: ignore[arg-type]
        done = dict(zip(guess, results))
    offered = tuple(v for v in TLS_VERSIONS if shakes[v].ok)
    if not offered:
        errors = "; ".join(f"TLS {v}: {h.error}" for v, h in shakes.items())
        v = gate.Verdict(False, mode, f"server not reachable at {host}:{port} ({errors})",
                         (f"no TLS handshake with {host}:{port} (SNI {server_name}): {errors}",), reachable=False)
        return Outcome(v, [], (), out_notes)
    if why:
        out_notes.append(why)
    checks = planned(offered)
    todo = [c for c in checks if c not in done]
    if todo:
        done.update(zip(todo, probe.probe_many(host, port, server_name, items(todo), **kw)))  # type: ignore[arg-type]
    results = [done[c] for c in checks]
    seen = [gate.Seen(c, r) for c, r in zip(checks, results)]
    if mitigation is None:
        from . import paths
        mitigation = gate.tls12_opt_in(paths.policy_path())
    verdict = gate.judge(mode, seen, offered=offered, trusted_cert=trusted is not None, clients=clients,
                         mitigation=mitigation)
    if out_notes:
        verdict = gate.Verdict(verdict.ok, verdict.mode, verdict.summary, verdict.problems,
                               verdict.warnings + tuple(out_notes), verdict.effects, verdict.reachable)
    return Outcome(verdict, seen, offered, out_notes)


def run_for_vhost(op: str, a: "Assessment", host: str, port: int, server_name: str,
                  prepared: Optional[Preparation] = None, **kw: Any) -> Outcome:
    """`run` for the CN vhost of assessment ``a`` after ``op``: its required paths, the operator's certificate."""
    if prepared is not None:
        return run(mode_for(op), host, port, server_name, prepared=prepared, **kw)
    paths, notes = required_paths_of(a.filename, a.line)
    trusted, cert_notes = trusted_client_cert()
    return run(mode_for(op), host, port, server_name, required=paths, trusted=trusted, notes=notes + cert_notes,
               **kw)
