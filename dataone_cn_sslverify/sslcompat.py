"""TLS version pins and post-handshake auth on every Python from 3.6 to 3.13.

Why this module: ``ssl.TLSVersion`` and ``SSLContext.minimum_version`` /
``maximum_version`` are Python 3.7+, and Ubuntu 18.04's Python 3.6 has only the
``OP_NO_*`` options (with OpenSSL 1.1.1, ``OP_NO_TLSv1_3`` included): there,
``ssl.TLSVersion`` is an AttributeError at import and so is
``ctx.minimum_version = ...`` at run time. So every pin goes through
`set_range`, which uses the mechanism the interpreter has, and versions are
named by strings (``TLSv1_2``), which exist everywhere. ``post_handshake_auth`` exists from 3.6.7/3.7.1 on (Ubuntu
18.04 ships 3.6.9); asking for it where it is missing is an error, not a no-op.
"""

import ssl
import weakref
from typing import Any, MutableMapping, Optional, Tuple

MINIMUM_SUPPORTED = "MINIMUM_SUPPORTED"
MAXIMUM_SUPPORTED = "MAXIMUM_SUPPORTED"
TLSv1 = "TLSv1"
TLSv1_1 = "TLSv1_1"
TLSv1_2 = "TLSv1_2"
TLSv1_3 = "TLSv1_3"
_ORDER = (TLSv1, TLSv1_1, TLSv1_2, TLSv1_3)
#: Present since Python 3.7 with OpenSSL >= 1.1.0h; the value is OpenSSL's.
OP_NO_RENEGOTIATION = getattr(ssl, "OP_NO_RENEGOTIATION", 0x40000000)

_TLSVersion = getattr(ssl, "TLSVersion", None)
#: The pins set on 3.6 (its SSLContext has no attribute for them), for minimum_version()/maximum_version().
_PINS: MutableMapping[ssl.SSLContext, Tuple[str, str]] = weakref.WeakKeyDictionary()
_UNPINNED = (MINIMUM_SUPPORTED, MAXIMUM_SUPPORTED)


def _check(name: str) -> str:
    if name not in _ORDER and name not in (MINIMUM_SUPPORTED, MAXIMUM_SUPPORTED):
        raise ValueError("unknown TLS version {!r}".format(name))
    return name


def set_range(ctx: ssl.SSLContext, minimum: Optional[str] = None, maximum: Optional[str] = None) -> None:
    """Pin the lowest and/or highest protocol version ``ctx`` may negotiate."""
    if _TLSVersion is not None:
        if minimum is not None:
            setattr(ctx, "minimum_version", _TLSVersion[_check(minimum)])
        if maximum is not None:
            setattr(ctx, "maximum_version", _TLSVersion[_check(maximum)])
        return
    lo, hi = _PINS.get(ctx, _UNPINNED)
    lo = _check(minimum) if minimum is not None else lo
    hi = _check(maximum) if maximum is not None else hi
    first = _ORDER.index(lo) if lo in _ORDER else 0
    last = _ORDER.index(hi) if hi in _ORDER else len(_ORDER) - 1
    for i, version in enumerate(_ORDER):
        flag = getattr(ssl, "OP_NO_" + version, None)
        if flag is None:
            if not first <= i <= last:
                continue
            raise ValueError("this Python's ssl cannot negotiate {} (OpenSSL {})".format(version, ssl.OPENSSL_VERSION))
        if first <= i <= last:
            ctx.options &= ~flag
        else:
            ctx.options |= flag
    _PINS[ctx] = (lo, hi)


def minimum_version(ctx: ssl.SSLContext) -> str:
    """The pinned lowest version's name, or ``MINIMUM_SUPPORTED``."""
    if _TLSVersion is not None:
        return str(getattr(ctx, "minimum_version").name)
    return _PINS.get(ctx, _UNPINNED)[0]


def maximum_version(ctx: ssl.SSLContext) -> str:
    """The pinned highest version's name, or ``MAXIMUM_SUPPORTED``."""
    if _TLSVersion is not None:
        return str(getattr(ctx, "maximum_version").name)
    return _PINS.get(ctx, _UNPINNED)[1]


def has_post_handshake_auth(ctx: ssl.SSLContext) -> bool:
    """Whether this Python can offer TLS 1.3 post-handshake authentication."""
    return hasattr(ctx, "post_handshake_auth")


def set_post_handshake_auth(ctx: ssl.SSLContext, on: Any) -> None:
    """Offer (or not) the ``post_handshake_auth`` extension; an error where it cannot be offered."""
    if not has_post_handshake_auth(ctx):
        if on:
            raise ValueError("this Python's ssl cannot offer post-handshake authentication (needs 3.6.7+)")
        return
    setattr(ctx, "post_handshake_auth", bool(on))


def post_handshake_auth(ctx: ssl.SSLContext) -> bool:
    """Whether ``ctx`` offers post-handshake authentication (False where it cannot)."""
    return bool(getattr(ctx, "post_handshake_auth", False))
