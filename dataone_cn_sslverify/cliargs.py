"""The command line's arguments: the parser `cli.main` reads them with (``cli.build_parser`` too).

Built without importing the probe stack (``monitor`` runs every minute), so
the probe backends are spelled here (`BACKENDS`).
"""

import argparse
from typing import Any

from . import __version__, clients


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, as a parent parser.

    The main parser and every subparser share it, so ``--json status`` and
    ``status --json`` both work and each command's ``--help`` lists them. The
    subparsers' copies default to SUPPRESS: a subparser writes its defaults
    into the same namespace, and would otherwise reset a ``--vhost F`` given
    before the command.
    """
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("--vhost", metavar="FILE", default=default(None),
                   help="the vhost file to act on (default: found from what Apache loads)")
    g.add_argument("--json", action="store_true", default=default(False), help="print one JSON document on stdout")
    g.add_argument("--verbose", "-v", action="store_true", default=default(False), help="say more")
    return g


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dataone-cn-sslverify",
        description="Stop asking browsers for an X.509 client certificate on a DataONE CN's /cn; keep asking API clients.",
        parents=[_global_options(suppress=False)],
        epilog="Exit codes: 0 done or nothing to do; 1 failed, previous configuration restored and active; "
               "2 refused, nothing changed; 3 failed and not fully restored (the message says what to run); "
               "4 no CN SSL vhost found; 5 a hazard (check, probe --compare); 6 the server could not be reached (probe).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = [_global_options(suppress=True)]
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=common)

    command("status", "each SSL vhost Apache loads and the state of its block")
    sp = command("diff", "the unified diff `apply` would make; writes nothing")
    sp.add_argument("--adopt", action="store_true", help="as `apply --adopt`")
    for name, text in (("apply", "back up, patch, config test, graceful reload, live check; roll back on failure"),
                       ("revert", "put the original block back, with the same safety steps")):
        sp = command(name, text)
        sp.add_argument("--no-reload", action="store_true", help="write and config-test only; do not reload Apache")
        sp.add_argument("--no-probe", action="store_true", help="skip the live check after the reload")
        if name == "apply":
            sp.add_argument("--adopt", action="store_true",
                            help="also replace a policy that is inline in the vhost (superseded) by the managed Include, "
                                 "so that the policy file (and its TLS 1.2 opt-in) is what Apache loads; revert gives "
                                 "the inline lines back")
    command("backups", "list full-file backups (newest first)")
    command("discard-journal", "set aside an unreadable journal of an interrupted run (a copy is kept)")
    sp = command("restore", "restore a full-file backup by ID, with the same safety steps")
    sp.add_argument("id", metavar="ID")
    sp.add_argument("--no-reload", action="store_true", help="write and config-test only; do not reload Apache")
    sp = command("probe", "which clients the live vhost asks for a certificate (exit 6 if the server cannot be reached)")
    sp.add_argument("--connect", metavar="HOST:PORT", help="address to connect to (default: the vhost's own)")
    sp.add_argument("--servername", metavar="NAME", help="SNI and Host header (default: the vhost's ServerName)")
    sp.add_argument("--path", default="/cn/", help="request path (default: /cn/)")
    sp.add_argument("--profile", action="append", metavar="NAME", help="only this client profile (repeatable)")
    sp.add_argument("--cert", metavar="PEM", help="client certificate to present when asked")
    sp.add_argument("--key", metavar="PEM", help="its private key (default: in --cert)")
    sp.add_argument("--cacert", metavar="PEM", help="verify the server against this CA (default: no verification)")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds per connection (default: 10)")
    sp.add_argument("--client", action="append", metavar="ID", choices=[c.id for c in clients.CLIENTS],
                    help="only this client family of the matrix (repeatable): " + ", ".join(c.id for c in clients.CLIENTS))
    sp.add_argument("--kind", choices=clients.KINDS, help="only browser or only API client families")
    sp.add_argument("--tls", action="append", choices=clients.TLS_VERSIONS, help="only this TLS version (repeatable)")
    sp.add_argument("--no-instruments", action="store_true",
                    help="no extra TLS 1.3 browser rows that offer post-handshake auth to make a request visible")
    sp.add_argument("--backend", choices=BACKENDS, help="python (default) or openssl s_client")
    sp.add_argument("--compare", metavar="JSON",
                    help="a saved `probe --json`: exit 5 if an API client that worked then fails now, or a browser is asked")
    sp = command("check", "hazards that break clients of the CN vhost (exit 5 when one is found)")
    sp.add_argument("--connect", metavar="HOST:PORT", help="address for the live checks (default: the vhost's own)")
    sp.add_argument("--servername", metavar="NAME", help="SNI for the live checks (default: the vhost's ServerName)")
    sp.add_argument("--no-live", action="store_true", help="judge from the configuration only (no TLS handshakes)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds per live check (default: 5)")
    sp = command("monitor", "one verdict for Check_MK/Nagios: OK, WARN (drift), CRIT, UNKNOWN; "
                         "reads only, never reloads")
    sp.add_argument("--format", choices=("nagios", "checkmk"), default="nagios",
                    help="nagios: `STATUS - text | perfdata`, exit 0/1/2/3 (default); "
                         "checkmk: a local-check line, exit 0")
    sp.add_argument("--live", action="store_true",
                    help="also probe the live vhost (a few clients, replication without a certificate)")
    sp.add_argument("--cache", type=float, default=300.0, metavar="SECONDS",
                    help="reuse a --live verdict this recent, kept in the state dir (default 300; 0: never)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds per live connection (default 5)")
    return p


#: `probe.BACKENDS`, spelled here so that building the parser does not import the probe stack.
BACKENDS = ("python", "openssl")
