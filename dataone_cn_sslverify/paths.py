"""Where things live, with the environment overrides docs/design.md names for tests."""

import os

from .policy import DEFAULT_SNIPPET

LIVE_NAME = "cn-sslverify.live.conf"

DEFAULT_STATE_DIR = "/var/lib/dataone-cn-sslverify"


def policy_path() -> str:
    """The policy snippet our managed Include names (DATAONE_CN_SSLVERIFY_POLICY overrides)."""
    return os.environ.get("DATAONE_CN_SSLVERIFY_POLICY") or DEFAULT_SNIPPET


def live_path() -> str:
    """The policy's live copy, what the managed Include names (DATAONE_CN_SSLVERIFY_LIVE overrides).

    Next to the policy file by default (``/etc/dataone/apache2/cn-sslverify.live.conf``):
    Apache may read it; it is not a dpkg conffile; postrm purge removes it.
    """
    return os.environ.get("DATAONE_CN_SSLVERIFY_LIVE") or os.path.join(
        os.path.dirname(policy_path()) or ".", LIVE_NAME)


def state_dir() -> str:
    """Backups, saved blocks, journal and lock (DATAONE_CN_SSLVERIFY_STATE_DIR overrides)."""
    return os.environ.get("DATAONE_CN_SSLVERIFY_STATE_DIR") or DEFAULT_STATE_DIR
