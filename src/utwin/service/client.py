"""A small synchronous uTwin client for people (the CLI) and scripts.

Also what a failed call of any of the blocking clients (this one, the admin and
the DigiTwin client) raises, so that the CLI handles it without importing grpc.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from utwin import uuid
from utwin.errors import InvalidArgument
from utwin.uri import Topic
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import uattributes_pb2, umessage_pb2, uri_pb2, ustatus_pb2

# What the blocking clients of this package raise when a call fails.
CallFailed = grpc.RpcError


def call_failure(error: grpc.RpcError) -> str:
    """A failed call as people read it: its status code and the server's detail."""
    return f"{error.code().name}: {error.details()}"


@dataclasses.dataclass(frozen=True)
class ClientCredentials:
    """What a client shows the server: TLS trust and certificate, and a bearer token."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


PLAINTEXT = ClientCredentials()


def open_channel(
    target: str,
    credentials: ClientCredentials = PLAINTEXT,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A blocking channel to target: TLS when a CA is given (mTLS with a certificate), else plaintext."""
    if (credentials.tls_cert is None) != (credentials.tls_key is None):
        raise InvalidArgument("--tls-cert, --tls-key: give both or neither")
    if credentials.tls_ca is None:
        if credentials.tls_cert is not None:
            raise InvalidArgument("--tls-cert: needs --tls-ca to verify the server")
        return grpc.insecure_channel(target, options)
    # Imported here: it loads the X.509 library, which a plaintext client never needs.
    from utwin.service.tls import channel_credentials

    tls = channel_credentials(
        credentials.tls_ca,
        credentials.tls_cert,
        credentials.tls_key,
        ("--tls-ca", "--tls-cert", "--tls-key"),
    )
    return grpc.secure_channel(target, tls, options)


def to_uuri(topic: Topic) -> uri_pb2.UUri:
    return uri_pb2.UUri(
        authority_name=topic.authority,
        ue_id=topic.ue_id,
        ue_version_major=topic.version,
        resource_id=topic.resource,
    )


def publish_message(
    topic: Topic, payload: bytes | None, payload_format: int, ttl_ms: int | None = None
) -> umessage_pb2.UMessage:
    """A PUBLISH message on topic with a fresh UUID v7 id."""
    msb, lsb = uuid.new_v7()
    attributes = uattributes_pb2.UAttributes(
        type=uattributes_pb2.UMESSAGE_TYPE_PUBLISH,
        source=to_uuri(topic),
    )
    attributes.id.msb = msb
    attributes.id.lsb = lsb
    if payload is not None:
        attributes.payload_format = payload_format  # type: ignore[assignment]
    if ttl_ms is not None:
        attributes.ttl = ttl_ms
    message = umessage_pb2.UMessage(attributes=attributes)
    if payload is not None:
        message.payload = payload
    return message


class UTwinClient:
    """Blocking calls to a uTwin at `target` (HOST:PORT), each with a deadline."""

    def __init__(
        self, target: str, timeout_s: float = 10.0, credentials: ClientCredentials = PLAINTEXT
    ) -> None:
        self._channel = open_channel(target, credentials)
        self._stub = utwin_pb2_grpc.uTwinStub(self._channel)  # generated, untyped
        self._timeout_s = timeout_s
        self._metadata = credentials.metadata()

    def get_last_messages(self, topics: Sequence[Topic]) -> list[utwin_pb2.MessageResponse]:
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(to_uuri(topic) for topic in topics)
        response = self._stub.GetLastMessages(request, metadata=self._metadata, timeout=self._timeout_s)
        return list(response.responses)

    def set_last_message(self, message: umessage_pb2.UMessage) -> ustatus_pb2.UStatus:
        status: ustatus_pb2.UStatus = self._stub.SetLastMessage(
            message, metadata=self._metadata, timeout=self._timeout_s
        )
        return status

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> UTwinClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
