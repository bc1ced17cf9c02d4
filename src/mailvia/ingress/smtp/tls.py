"""TLS for SMTP submission: the operator's certificate, or a self-signed one made on first run.

Side effects: `submission_tls` may create `DATA_DIR/tls/` with `submission.pem` and
`submission.key` (0600), once; later runs reuse them until they expire.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailvia.domain.errors import InvalidInput

SELF_SIGNED_DAYS = 825  # the longest validity clients commonly accept
_RENEW_BEFORE = datetime.timedelta(days=7)


def submission_tls(
    *, cert: Path | None, key: Path | None, data_dir: Path, hosts: tuple[str, ...] = ()
) -> tuple[ssl.SSLContext, Path, bool]:
    """A server TLS context, the certificate file it uses, and whether it is self-signed.

    With `cert` and `key` (SUBMISSION_TLS_CERT/KEY) those files are loaded; without them a
    self-signed certificate for localhost, 127.0.0.1, ::1, this host's name and `hosts` is
    made in `data_dir/tls/` unless a valid one is there. Raises InvalidInput when only one of
    the two is given or the files cannot be loaded."""
    if (cert is None) != (key is None):
        raise InvalidInput("SUBMISSION_TLS_CERT and SUBMISSION_TLS_KEY go together")
    self_signed = cert is None
    if cert is None or key is None:
        cert, key = data_dir / "tls" / "submission.pem", data_dir / "tls" / "submission.key"
        if not _still_valid(cert) or not key.exists():
            make_self_signed(cert, key, hosts=(socket.gethostname(), *hosts))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError included; neither names the files
        raise InvalidInput(f"cannot load TLS certificate {cert} with key {key}: {exc}") from exc
    return context, cert, self_signed


def fingerprint(cert_path: Path) -> str:
    """The SHA-256 fingerprint of the file's first certificate, as mail clients show it
    (`AB:CD:...`)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def make_self_signed(cert_path: Path, key_path: Path, *, hosts: tuple[str, ...] = ()) -> None:
    """Write a self-signed certificate for localhost, 127.0.0.1, ::1 and `hosts` (names or IP
    addresses), and its key (mode 0600). Overwrites both files."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailvia submission")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    os.chmod(key_path, 0o600)  # an existing file keeps its mode through O_CREAT
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(("localhost", "127.0.0.1", "::1", *hosts)):
        if not host or host in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if host.isascii():
                names.append(x509.DNSName(host.lower()))
    return names


def _still_valid(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + _RENEW_BEFORE
