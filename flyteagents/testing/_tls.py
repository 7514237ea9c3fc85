"""self_signed_certificate: a TLS certificate and key for local test servers (a private CA, as clients see it)."""

from __future__ import annotations

import datetime
from pathlib import Path

__all__ = ["self_signed_certificate"]


def self_signed_certificate(directory: str | Path, host: str = "localhost") -> tuple[str, str]:
    """Write a self-signed certificate for ``host`` (it is its own CA) and its key as PEM files.

    Serve a test server with them to check a client against a certificate it does not trust,
    then trust it (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``AWS_CA_BUNDLE``, ...) with the
    certificate file. It names only ``host``: reaching the server by another name (its IP
    address) is a hostname mismatch. Needs the ``cryptography`` package.

    Returns:
        (certificate path, key path).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = Path(directory)
    cert_path, key_path = directory / f"{host}.pem", directory / f"{host}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)
