"""Channels to a utwin server: plaintext, TLS, mTLS, and the bearer token every call carries."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from utwin.errors import InvalidArgument

# Option names as the CLI spells them, so that a bad combination reads the same everywhere.
_FLAG_NAMES = ("--tls-ca", "--tls-cert", "--tls-key")


@dataclasses.dataclass(frozen=True)
class ClientCredentials:
    """What a client shows the server: TLS trust and certificate, and a bearer token.

    No CA: plaintext. A CA: TLS, verifying the server; with a certificate and its key: mTLS.
    """

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


PLAINTEXT = ClientCredentials()


def _channel_credentials(credentials: ClientCredentials) -> grpc.ChannelCredentials | None:
    """The TLS credentials to use, or None for plaintext; InvalidArgument for a bad combination."""
    if (credentials.tls_cert is None) != (credentials.tls_key is None):
        raise InvalidArgument("--tls-cert, --tls-key: give both or neither")
    if credentials.tls_ca is None:
        if credentials.tls_cert is not None:
            raise InvalidArgument("--tls-cert: needs --tls-ca to verify the server")
        return None
    # Imported here: it loads the X.509 library, which a plaintext client never needs.
    from utwin.service.tls import channel_credentials

    return channel_credentials(credentials.tls_ca, credentials.tls_cert, credentials.tls_key, _FLAG_NAMES)


def open_channel(
    target: str,
    credentials: ClientCredentials = PLAINTEXT,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A blocking channel to target: TLS when a CA is given (mTLS with a certificate), else plaintext."""
    tls = _channel_credentials(credentials)
    if tls is None:
        return grpc.insecure_channel(target, options)
    return grpc.secure_channel(target, tls, options)


def open_aio_channel(
    target: str,
    credentials: ClientCredentials = PLAINTEXT,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to target, with the same rules as open_channel."""
    tls = _channel_credentials(credentials)
    if tls is None:
        return grpc.aio.insecure_channel(target, options)
    return grpc.aio.secure_channel(target, tls, options)
