"""Changes the tests make to an instance the way the package would, without running the package.

Shared by the client-matrix and `check` tests: they need the applied state and
the TLS 1.2 opt-in on a live instance, independently of the transaction.
"""

from dataone_cn_sslverify import apacheconf as ac
from dataone_cn_sslverify import policy

from .instance import ApacheInstance


def patch_applied(inst: ApacheInstance) -> None:
    """The change as `apply` writes it (computed with `policy`, without the transaction)."""
    text = ac.decode(inst.vhost_bytes())
    a = policy.assess(ac.parse(text, str(inst.vhost_path)), str(inst.vhost_path))[0]
    inst.write_vhost(ac.encode(policy.plan_apply(text, a, str(inst.policy_path)).apply_to(text)))


def set_tls12_only(inst: ApacheInstance, on: bool = True) -> None:
    """The documented opt-in: uncomment `SSLProtocol -all +TLSv1.2` in the policy snippet (or comment it again)."""
    text = inst.policy_path.read_text()
    a, b = "#SSLProtocol -all +TLSv1.2", "SSLProtocol -all +TLSv1.2"
    assert (a if on else b) in text, "conf/cn-sslverify.conf lost its documented TLS 1.2 setting"
    inst.policy_path.write_text(text.replace(a, b) if on else text.replace("\n" + b, "\n" + a))
