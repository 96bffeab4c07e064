"""Where things live, with the environment overrides docs/design.md names for tests."""

from __future__ import annotations

import os

from .policy import DEFAULT_SNIPPET

DEFAULT_STATE_DIR = "/var/lib/dataone-cn-sslverify"


def policy_path() -> str:
    """The policy snippet our managed Include names (DATAONE_CN_SSLVERIFY_POLICY overrides)."""
    return os.environ.get("DATAONE_CN_SSLVERIFY_POLICY") or DEFAULT_SNIPPET


def state_dir() -> str:
    """Backups, saved blocks, journal and lock (DATAONE_CN_SSLVERIFY_STATE_DIR overrides)."""
    return os.environ.get("DATAONE_CN_SSLVERIFY_STATE_DIR") or DEFAULT_STATE_DIR
