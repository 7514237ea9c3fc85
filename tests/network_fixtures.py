"""Real network pieces between a client and a test server: a private CA, an HTTP CONNECT proxy, a TLS front.

Shared by the core's and the plugins' tests (the root conftest.py puts this directory on
``sys.path``) to execute the documented settings for reaching a service through a proxy
(``HTTPS_PROXY``) or over TLS signed by a private CA (``REQUESTS_CA_BUNDLE``, ``ssl_cafile``).
Each server runs its own asyncio loop in a daemon thread, on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConnectProxy", "Forwarder", "PrivateCA", "hashed_ca_directory", "private_ca"]


@dataclass(frozen=True)
class PrivateCA:
    """PEM files: a CA (``ca_file``, what clients are told to trust), and what it issued."""

    directory: Path
    ca_file: str
    _ca_key: Any
    _ca_cert: Any

    def issue(self, name: str, *hosts: str, client: bool = False, password: bytes | None = None) -> tuple[str, str]:
        """Write a certificate signed by this CA for ``hosts`` (or a client certificate) and its key.

        Args:
            name: file name stem.
            hosts: DNS names the (server) certificate is valid for.
            client: issue a client certificate (mutual TLS) rather than a server one.
            password: encrypt the key file with this password.

        Returns:
            (certificate path, key path).
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else name)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        )
        return str(cert_path), str(key_path)


def private_ca(directory: str | Path) -> PrivateCA:
    """Make a CA of one's own, as a company's private CA: nothing trusts it unless told to."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flyteagents test private CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca_file = directory / "private-ca.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return PrivateCA(directory, str(ca_file), key, cert)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: Callable[[bytes], None] | None = None
) -> None:
    try:
        while data := await reader.read(65536):
            if tap is not None:
                tap(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    tap: Callable[[bytes], None] | None = None,
) -> None:
    """Copy bytes both ways between ``a`` and ``b``; ``tap`` sees what ``a`` sends."""
    await asyncio.gather(_pipe(a[0], b[1], tap), _pipe(b[0], a[1]))


class _LoopServer:
    """An asyncio server on 127.0.0.1 in its own loop thread; ``with`` starts and stops it."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._server: asyncio.Server | None = None

    def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _ssl(self) -> ssl.SSLContext | None:
        return None

    def start(self) -> _LoopServer:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ssl())
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)  # ended, not destroyed while pending

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ConnectProxy(_LoopServer):
    """An HTTP proxy that tunnels ``CONNECT host:port`` (what clients do for https through ``HTTPS_PROXY``).

    ``routes`` maps the ``host:port`` a client asks for to the local address the proxy really
    connects to, so a client can be given a host name only the proxy can resolve: reaching it
    at all proves the traffic went through the proxy. ``tunnels`` lists every CONNECT target.
    """

    def __init__(self, routes: dict[str, tuple[str, int]] | None = None) -> None:
        super().__init__()
        self.routes = dict(routes or {})
        self.tunnels: list[str] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, for ``HTTPS_PROXY``."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
        if method != "CONNECT" or target not in self.routes:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        self.tunnels.append(target)
        upstream = await asyncio.open_connection(*self.routes[target])
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice((reader, writer), upstream)


class Forwarder(_LoopServer):
    """A TCP front for a server (``backend``), in clear text or, with ``cert``, serving TLS.

    With ``client_ca`` it requires a client certificate signed by it. It counts what a test may
    check: ``handshakes`` (connections accepted, after the TLS handshake if any), ``max_open``
    (the most connections open at once), ``client_subjects`` (client certificates' common names)
    and ``received`` (every byte clients sent, decrypted: what a server would read).
    """

    def __init__(
        self,
        backend: Callable[[], tuple[str, int]],
        cert: tuple[str, str] | None = None,
        client_ca: str | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.cert = cert
        self.client_ca = client_ca
        self.handshakes = 0
        self.open = 0
        self.max_open = 0
        self.client_subjects: list[str] = []
        self.received = bytearray()

    def _ssl(self) -> ssl.SSLContext | None:
        if self.cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.cert)
        if self.client_ca:
            context.load_verify_locations(self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            peer = writer.get_extra_info("peercert")
            if peer:
                subjects = (value for rdn in peer["subject"] for key, value in rdn if key == "commonName")
                self.client_subjects.extend(subjects)
            try:
                upstream = await asyncio.open_connection(*self.backend())
            except OSError:
                writer.close()
                return
            await _splice((reader, writer), upstream, self.received.extend)
        finally:
            self.open -= 1


def hashed_ca_directory(ca_file: str, directory: str | Path) -> str:
    """A directory holding ``ca_file`` under OpenSSL's subject-hash name (``<hash>.0``), for ``SSL_CERT_DIR``.

    What ``openssl rehash`` does, without needing the openssl command: the name is the first four
    bytes (little-endian) of the SHA-1 of the subject's canonical encoding, each attribute value
    a lower-cased UTF8String with its spaces collapsed, the RDN sets without the outer SEQUENCE.
    """
    import hashlib
    import re

    from cryptography import x509
    from cryptography.x509.name import _ASN1Type

    cert = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    canonical = b""
    for rdn in cert.subject.rdns:
        attributes = [
            x509.NameAttribute(a.oid, re.sub(r"\s+", " ", str(a.value).strip()).lower(), _ASN1Type.UTF8String)
            for a in rdn
        ]
        der = x509.Name([x509.RelativeDistinguishedName(attributes)]).public_bytes()
        canonical += _strip_header(der)
    digest = hashlib.sha1(canonical).digest()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{int.from_bytes(digest[:4], 'little'):08x}.0").write_bytes(Path(ca_file).read_bytes())
    return str(directory)


def _strip_header(der: bytes) -> bytes:
    """The contents of a DER SEQUENCE (its tag and length removed)."""
    length = der[1]
    return der[2 + (length & 0x7F) :] if length & 0x80 else der[2:]
