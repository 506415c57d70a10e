"""Certificates made by the tests: a one-day CA, a server certificate for 127.0.0.1 and a
client certificate for mutual TLS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_PEM = serialization.Encoding.PEM

_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.Certificate:
    """A day-long certificate for ``subject`` signed by ``signer`` (the test CA's key)."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(_CA_USAGE, critical=True)
    else:
        address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def certificate_authority(directory: Path) -> tuple[Path, Path, Path]:
    """A CA file and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    files = mutual_tls(directory)
    return files.ca, files.server_cert, files.server_key


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA, a server (127.0.0.1) and a client (CN=fiona) it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def mutual_tls(directory: Path, client: str = "fiona") -> TlsFiles:
    """A new CA with a server and a client certificate, written into ``directory``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files.ca.write_bytes(_issue("Test CA", ca_key, ca_key, ca=True).public_bytes(_PEM))
    for subject, cert, key in [
        ("127.0.0.1", files.server_cert, files.server_key),
        (client, files.client_cert, files.client_key),
    ]:
        own_key = ec.generate_private_key(ec.SECP256R1())
        cert.write_bytes(_issue(subject, own_key, ca_key, ca=False).public_bytes(_PEM))
        key.write_bytes(
            own_key.private_bytes(
                _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return files
