"""Throwaway PKI for integration tests, built with the ``openssl`` CLI.

Why the CLI and not a Python crypto library: the harness must run on a bare
Debian/Ubuntu host with only the standard library, and ``openssl`` is always
there (Apache's mod_ssl depends on it).  EC P-256 keys keep the whole PKI under
a few hundred milliseconds.

What is built, and why each piece exists:

* a test CA: signs the server certificate (so curl can verify the server with
  ``--cacert``) and the trusted client certificate (so Apache, configured with
  ``SSLCACertificateFile`` = this CA, reports ``SSL_CLIENT_VERIFY=SUCCESS``);
* a server certificate with SAN ``DNS:<server_name>`` and ``IP:127.0.0.1``, so
  both SNI-based and IP-based checks pass;
* a trusted client certificate whose subject looks like a DataONE node DN;
* an *untrusted* client certificate signed by a second, unrelated CA, to prove
  that the User-Agent pattern only decides whether a client is *asked*, not
  whether a certificate is *accepted*;
* a combined PEM (certificate + key) per client, because that is what
  ``curl --cert`` and ``openssl s_client -cert`` accept in one argument.
"""

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Union

from dataone_cn_sslverify.records import dataclass

__all__ = ["Pki", "make_pki", "CLIENT_SUBJECT", "UNTRUSTED_CLIENT_SUBJECT"]

#: Subject of the trusted client, DataONE style (``CN=urn:node:...,DC=dataone,DC=org``).
CLIENT_SUBJECT = "/DC=org/DC=dataone/CN=urn:node:testClient"
#: Subject of the client signed by the foreign CA.
UNTRUSTED_CLIENT_SUBJECT = "/DC=org/DC=example/CN=urn:node:untrustedClient"

_OPENSSL = shutil.which("openssl", path="/usr/bin:/bin:/usr/sbin:/sbin") or "openssl"
_DAYS = "30"


@dataclass(frozen=True)
class Pki:
    """Paths of every file of the throwaway PKI (all inside ``dir``).

    The file names ``server.crt``, ``server.key``, ``chain.crt`` and ``ca.crt``
    are a contract with the fixture vhosts (``@CERT_DIR@/server.crt`` ...).
    """

    dir: Path
    server_name: str
    ca_cert: Path
    ca_key: Path
    chain: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_pem: Path
    untrusted_ca_cert: Path
    untrusted_ca_key: Path
    untrusted_cert: Path
    untrusted_key: Path
    untrusted_pem: Path
    client_subject: str = CLIENT_SUBJECT
    untrusted_subject: str = UNTRUSTED_CLIENT_SUBJECT


def _run(args: List[str], cwd: Path) -> None:
    """Run one openssl command; raise with its stderr so failures are readable."""
    proc = subprocess.run(
        [_OPENSSL] + args,
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "openssl %s failed (rc=%d):\n%s"
            % (" ".join(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
        )


def _new_key(path: Path, cwd: Path) -> None:
    """Create an EC P-256 key (fast; mod_ssl and curl accept it)."""
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)], cwd)
    os.chmod(str(path), 0o600)


def _make_ca(d: Path, stem: str, subject: str) -> None:
    """Self-signed CA certificate ``<stem>.crt`` with key ``<stem>.key``."""
    _new_key(d / (stem + ".key"), d)
    ext = d / (stem + ".ext")
    ext.write_text(
        "[v3]\n"
        "basicConstraints = critical, CA:TRUE\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    _run(
        [
            "req", "-new", "-x509", "-key", stem + ".key", "-out", stem + ".crt",
            "-days", _DAYS, "-subj", subject, "-config", ext.name, "-extensions", "v3",
            "-sha256",
        ],
        d,
    )


def _make_leaf(d: Path, stem: str, subject: str, ca_stem: str, serial: int, extensions: str) -> None:
    """Leaf certificate ``<stem>.crt``/``<stem>.key`` signed by CA ``<ca_stem>``."""
    _new_key(d / (stem + ".key"), d)
    csr = stem + ".csr"
    # A minimal config so ``req`` does not depend on the host's openssl.cnf.
    cnf = d / (stem + ".cnf")
    cnf.write_text("[req]\ndistinguished_name = dn\n[dn]\n")
    _run(["req", "-new", "-key", stem + ".key", "-out", csr, "-subj", subject, "-config", cnf.name], d)
    ext = d / (stem + ".ext")
    ext.write_text("[v3]\n" + extensions)
    _run(
        [
            "x509", "-req", "-in", csr, "-CA", ca_stem + ".crt", "-CAkey", ca_stem + ".key",
            "-set_serial", str(serial), "-days", _DAYS, "-sha256",
            "-extfile", ext.name, "-extensions", "v3", "-out", stem + ".crt",
        ],
        d,
    )


def _combine(d: Path, stem: str) -> Path:
    """Write ``<stem>.pem`` = certificate followed by key (curl ``--cert`` format)."""
    pem = d / (stem + ".pem")
    pem.write_bytes((d / (stem + ".crt")).read_bytes() + (d / (stem + ".key")).read_bytes())
    os.chmod(str(pem), 0o600)
    return pem


def make_pki(dirpath: Union[str, "os.PathLike[str]"], server_name: str) -> Pki:
    """Create a complete throwaway PKI in ``dirpath`` (created if missing).

    ``server_name`` becomes the server certificate's CN and DNS SAN; the SAN
    also holds ``IP:127.0.0.1`` so clients that connect by address verify too.
    """
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)

    _make_ca(d, "ca", "/DC=org/DC=dataone/CN=DataONE Test CA")
    _make_leaf(
        d, "server", "/CN=" + server_name, "ca", 1001,
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:%s, IP:127.0.0.1\n" % server_name,
    )
    _make_leaf(
        d, "client", CLIENT_SUBJECT, "ca", 1002,
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = clientAuth\n",
    )
    _make_ca(d, "untrusted-ca", "/DC=org/DC=example/CN=Unrelated Test CA")
    _make_leaf(
        d, "untrusted", UNTRUSTED_CLIENT_SUBJECT, "untrusted-ca", 2001,
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = clientAuth\n",
    )
    # The chain file a CN points SSLCertificateChainFile at: here just the CA
    # (no intermediate), kept as a separate file like production.
    chain = d / "chain.crt"
    shutil.copyfile(str(d / "ca.crt"), str(chain))

    for leftover in list(d.glob("*.csr")) + list(d.glob("*.ext")) + list(d.glob("*.cnf")):
        leftover.unlink()

    return Pki(
        dir=d,
        server_name=server_name,
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        chain=chain,
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
        client_pem=_combine(d, "client"),
        untrusted_ca_cert=d / "untrusted-ca.crt",
        untrusted_ca_key=d / "untrusted-ca.key",
        untrusted_cert=d / "untrusted.crt",
        untrusted_key=d / "untrusted.key",
        untrusted_pem=_combine(d, "untrusted"),
    )


def describe(pki: Optional[Pki]) -> str:
    """One-line summary, handy in assertion messages."""
    if pki is None:
        return "<no pki>"
    return "Pki(dir=%s, server_name=%s)" % (pki.dir, pki.server_name)
