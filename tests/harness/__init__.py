"""Integration test harness: a real Apache 2.4 CN instance in a temp directory.

Why a harness instead of mocks: the behaviour this project exists for
(renegotiation, TLS 1.3 post-handshake authentication, how ``<If>`` merges
with ``<Location>``) only exists inside a real mod_ssl.  The harness builds a
complete Debian-style Apache instance under a temp directory (Debian's
multi-instance convention, ``APACHE_CONFDIR``/``APACHE_ENVVARS``) so tests can
run the real server and the real ``apache2ctl`` without touching
``/etc/apache2``.

This module holds what the fixtures and the pure unit tests share: the list of
historical vhost variants and how to render a fixture vhost.  The fixture files
live in ``tests/fixtures/vhosts/cn-ssl.<variant>.conf``; the four are
byte-identical except for the client-verification block.
"""

import re
from pathlib import Path
from typing import Dict, Tuple, Union

#: The historical client-verification blocks, oldest first (ids as in docs/design.md).
VARIANTS: Tuple[str, ...] = ("plain-optional", "webkit-if-else", "webkit-only", "browser-list")

#: Placeholders the fixture vhosts contain, as ``render_fixture`` keyword names.
#: ``@SERVER_NAME@`` is filled from ``server_name=...`` and so on.
PLACEHOLDERS: Tuple[str, ...] = (
    "SERVER_NAME",
    "HTTPS_PORT",
    "HTTP_PORT",
    "CERT_DIR",
    "DOCROOT",
    "APACHE_CONFDIR",
    "LOG_DIR",
)

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
VHOSTS_DIR = FIXTURES_DIR / "vhosts"

_PLACEHOLDER_RE = re.compile(rb"@([A-Z][A-Z_]*)@")


def fixture_path(variant: str) -> Path:
    """Path of the fixture vhost for ``variant`` (one of ``VARIANTS``)."""
    if variant not in VARIANTS:
        raise ValueError("unknown vhost variant %r; expected one of %s" % (variant, ", ".join(VARIANTS)))
    return VHOSTS_DIR / ("cn-ssl.%s.conf" % variant)


def render_placeholders(data: bytes, values: Dict[str, Union[str, int, Path]], strict: bool = True) -> bytes:
    """Replace ``@NAME@`` in ``data`` by ``values[name.lower()]``.

    Why strict by default: a placeholder left in a vhost makes Apache fail in
    confusing ways (``@HTTPS_PORT@`` is not a port), so a missing value is an
    error here, not at config-test time.  Unknown keyword names are errors too
    (they are typos).
    """
    normalised = {k.upper(): str(v) for k, v in values.items()}
    unknown = sorted(set(normalised) - set(PLACEHOLDERS))
    if unknown:
        raise KeyError("unknown placeholder value(s): %s; known: %s" % (", ".join(unknown), ", ".join(PLACEHOLDERS)))

    missing = set()

    def repl(m: "re.Match[bytes]") -> bytes:
        name = m.group(1).decode("ascii")
        if name in normalised:
            return normalised[name].encode("utf-8")
        if name in PLACEHOLDERS:
            missing.add(name)
        return m.group(0)

    out = _PLACEHOLDER_RE.sub(repl, data)
    if strict and missing:
        raise KeyError("no value for placeholder(s): %s" % ", ".join("@%s@" % n for n in sorted(missing)))
    return out


def render_fixture(variant: str, strict: bool = True, **values: Union[str, int, Path]) -> bytes:
    """The fixture vhost of ``variant`` with its placeholders filled.

    Keyword names are the lower-case placeholder names
    (``server_name=``, ``https_port=``, ``http_port=``, ``cert_dir=``,
    ``docroot=``, ``apache_confdir=``, ``log_dir=``).  With ``strict=False``
    placeholders without a value are left as they are (handy for pure unit
    tests that only need realistic bytes).
    """
    return render_placeholders(fixture_path(variant).read_bytes(), values, strict=strict)


# Imported last: instance.py uses the helpers above.
from .pki import Pki, make_pki  # noqa: E402
from .instance import USER_AGENTS, ApacheError, ApacheInstance, CommandResult, Response  # noqa: E402

__all__ = [
    "VARIANTS",
    "PLACEHOLDERS",
    "FIXTURES_DIR",
    "VHOSTS_DIR",
    "fixture_path",
    "render_fixture",
    "render_placeholders",
    "Pki",
    "make_pki",
    "ApacheInstance",
    "ApacheError",
    "CommandResult",
    "Response",
    "USER_AGENTS",
]
