"""TLS credentials: the server's and those of peer links, both reloadable without dropping calls.

The server's certificate, key and client CA are read from PEM files. `reload()`
reads them again, checks that the key fits the certificate, and hands the new set
to gRPC through its certificate-configuration fetcher, which gRPC consults before
each new handshake: new connections get the new certificate, open ones (and their
calls) go on. A set that does not load keeps the old one in force.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from utwin.config import Config
from utwin.errors import InvalidArgument

log = logging.getLogger("utwin.service")


def read_pem(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _certificates(pem: bytes, setting: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise InvalidArgument(f"{setting}: not a PEM certificate") from None
    return certificates


def check_key_pair(certificate_pem: bytes, key_pem: bytes, settings: tuple[str, str]) -> None:
    """Raise InvalidArgument unless the key is the private key of the chain's first certificate."""
    certificate_setting, key_setting = settings
    leaf = _certificates(certificate_pem, certificate_setting)[0]
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{key_setting}: not an unencrypted PEM private key") from None
    public_format = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*public_format) != leaf.public_key().public_bytes(*public_format):
        raise InvalidArgument(f"{key_setting}: does not belong to the certificate in {certificate_setting}")


class ServerTls:
    """The server's TLS files and the reloadable credentials built from them."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self._cert = cert
        self._key = key
        self._client_ca = client_ca
        self._initial = self._read()
        self._pending: grpc.ServerCertificateConfiguration | None = None

    @classmethod
    def from_config(cls, config: Config) -> ServerTls | None:
        if config.tls_cert is None or config.tls_key is None:
            return None
        return cls(config.tls_cert, config.tls_key, config.tls_client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for `add_secure_port`; client certificates required when a client CA is set."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,  # type: ignore[arg-type]  # the stub omits the documented None (no change)
            require_client_authentication=self._client_ca is not None,
        )

    def reload(self) -> str | None:
        """Read the files again for the next handshakes; on failure keep the old set and return why."""
        try:
            self._pending = self._read()
        except InvalidArgument as exc:
            log.error("TLS files not reloaded, the previous ones stay in force: %s", exc.message)
            return exc.message
        log.info("TLS files reloaded; new connections use them")
        return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before each handshake, from its own thread: hand over a reload once.
        pending, self._pending = self._pending, None
        return pending

    def _read(self) -> grpc.ServerCertificateConfiguration:
        certificate = read_pem(self._cert, "tls_cert")
        key = read_pem(self._key, "tls_key")
        check_key_pair(certificate, key, ("tls_cert", "tls_key"))
        client_ca = None
        if self._client_ca is not None:
            client_ca = read_pem(self._client_ca, "tls_client_ca")
            _certificates(client_ca, "tls_client_ca")
        return grpc.ssl_server_certificate_configuration([(key, certificate)], root_certificates=client_ca)


# The PEM bytes behind client-side credentials: CA, and certificate and key when shown (mTLS).
ClientFiles = tuple[bytes, bytes | None, bytes | None]


def read_client_files(
    ca: Path, cert: Path | None = None, key: Path | None = None, settings: tuple[str, str, str] | None = None
) -> ClientFiles:
    """Read and check the CA, and the certificate and key when given; InvalidArgument names the setting."""
    ca_setting, cert_setting, key_setting = settings or ("tls_ca", "tls_cert", "tls_key")
    root = read_pem(ca, ca_setting)
    _certificates(root, ca_setting)
    if cert is None or key is None:
        return root, None, None
    certificate = read_pem(cert, cert_setting)
    private_key = read_pem(key, key_setting)
    check_key_pair(certificate, private_key, (cert_setting, key_setting))
    return root, certificate, private_key


def _client_credentials(files: ClientFiles) -> grpc.ChannelCredentials:
    root, certificate, private_key = files
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=private_key, certificate_chain=certificate
    )


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None, settings: tuple[str, str, str] | None = None
) -> grpc.ChannelCredentials:
    """Client-side TLS: trust `ca`, and present `cert`/`key` when given (mTLS)."""
    return _client_credentials(read_client_files(ca, cert, key, settings))


_PEER_SETTINGS = ("peer_tls_ca", "peer_tls_cert", "peer_tls_key")


class PeerTls:
    """The credentials of links to peers, read again by `reload()`.

    `credentials` changes (and `generation` counts up) only when a reload read
    files that differ from those in force: the peer clients then open new
    channels with them, and an unchanged reload leaves their connections alone.
    """

    def __init__(self, ca: Path, cert: Path | None = None, key: Path | None = None) -> None:
        self._paths = (ca, cert, key)
        self._files = read_client_files(ca, cert, key, _PEER_SETTINGS)
        self.credentials = _client_credentials(self._files)
        self.generation = 0

    @classmethod
    def from_config(cls, config: Config) -> PeerTls | None:
        """None (plaintext to peers) unless peer_tls_ca is set."""
        if config.peer_tls_ca is None:
            return None
        return cls(config.peer_tls_ca, config.peer_tls_cert, config.peer_tls_key)

    def reload(self) -> str | None:
        """Read the files again; on failure keep the credentials in force and return why."""
        try:
            files = read_client_files(*self._paths, _PEER_SETTINGS)
        except InvalidArgument as exc:
            log.error("peer TLS files not reloaded, the previous ones stay in force: %s", exc.message)
            return exc.message
        if files != self._files:
            self._files = files
            self.credentials = _client_credentials(files)
            self.generation += 1
            log.info("peer TLS files reloaded; new peer connections use them")
        return None


def peer_channel_credentials(config: Config) -> grpc.ChannelCredentials | None:
    """Credentials for links to peers; None (plaintext) unless peer_tls_ca is set."""
    peer_tls = PeerTls.from_config(config)
    return None if peer_tls is None else peer_tls.credentials
