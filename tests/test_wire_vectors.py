"""The spec's wire vectors, and the server's bytes checked against them.

The vectors are written out by hand from the uProtocol spec, so these tests
hold the generated classes, the hand-assembled responses of `service.wire`
and the live server to upstream's field numbers, not to each other.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.messages import encode_varint, publish, uuri
from tests.servers import ServerThread
from utwin import uuid
from utwin.errors import Code
from utwin.service import wire
from utwin.twin import Answer
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ucode_pb2, uuid_pb2

UURI_HEX = "0a0a7663752e6d795f76696e108182900d180120808002"
RESPONSE_HEX = "12200a170a0a7663752e6d795f76696e108182900d18012080800212050805120178"
UUID_HEX = "090070010000000000111a1a101010101080"
GET_LAST_MESSAGES = "/uprotocol.core.utwin.v2.uTwin/GetLastMessages"
SET_LAST_MESSAGE = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _not_found_response(topic: bytes, detail: str) -> bytes:
    """One NOT_FOUND entry by hand: responses=2 {topic=1, status=2 {code=1, message=2}}."""
    status = b"\x08\x05" + _field(0x12, detail.encode())
    return _field(0x12, _field(0x0A, topic) + _field(0x12, status))


def _identity(data: bytes) -> bytes:
    return data


def test_uuri_vector() -> None:
    """The spec's UUri serializes to the spec's bytes."""
    assert UURI_HEX == uuri().SerializeToString().hex()


def test_uuid_vector_bytes() -> None:
    """The spec's UUID serializes to the spec's bytes."""
    assert UUID_HEX == uuid_pb2.UUID(msb=0x17000, lsb=0x8010101010101A1A).SerializeToString().hex()


def test_uuid_vector_text() -> None:
    """The spec's UUID prints in the spec's text form."""
    assert "00000000-0001-7000-8010-101010101a1a" == uuid.to_text(0x17000, 0x8010101010101A1A)


def test_hand_encoding_matches_response_vector() -> None:
    """The test's own hand encoding agrees with the spec's response vector."""
    assert RESPONSE_HEX == _not_found_response(bytes.fromhex(UURI_HEX), "x").hex()


def test_wire_builds_response_vector() -> None:
    """service.wire assembles the spec's GetLastMessagesResponse from a NOT_FOUND answer."""
    built = wire.get_last_messages_response([bytes.fromhex(UURI_HEX)], [Answer(Code.NOT_FOUND, "x")])
    assert RESPONSE_HEX == built.hex()


def test_generated_class_parses_response_vector() -> None:
    """The generated GetLastMessagesResponse reads the vector as one NOT_FOUND entry on that topic."""
    response = utwin_pb2.GetLastMessagesResponse.FromString(bytes.fromhex(RESPONSE_HEX))
    expected = utwin_pb2.GetLastMessagesResponse()
    entry = expected.responses.add()
    entry.topic.CopyFrom(uuri())
    entry.status.code = ucode_pb2.NOT_FOUND
    entry.status.message = "x"
    assert expected == response


def test_generated_class_writes_response_vector() -> None:
    """The generated GetLastMessagesResponse serializes that entry to the vector's bytes."""
    response = utwin_pb2.GetLastMessagesResponse()
    entry = response.responses.add()
    entry.topic.CopyFrom(uuri())
    entry.status.code = ucode_pb2.NOT_FOUND
    entry.status.message = "x"
    assert RESPONSE_HEX == response.SerializeToString().hex()


def test_server_answers_missing_topic_with_vector_layout(server: ServerThread) -> None:
    """For a missing topic the server's raw bytes are the vector's layout with its own detail."""
    request = _field(0x0A, _field(0x0A, bytes.fromhex(UURI_HEX)))
    with server.channel() as channel:
        call = channel.unary_unary(
            GET_LAST_MESSAGES, request_serializer=_identity, response_deserializer=_identity
        )
        raw = call(request, timeout=5)
    detail = utwin_pb2.GetLastMessagesResponse.FromString(raw).responses[0].status.message
    assert _not_found_response(bytes.fromhex(UURI_HEX), detail) == raw


def test_server_serves_stored_message_in_field_three(server: ServerThread) -> None:
    """An OK entry carries code 0 (omitted on the wire) and the stored message as field 3."""
    message = publish(uuri(), b"21.5").SerializeToString()
    request = _field(0x0A, _field(0x0A, bytes.fromhex(UURI_HEX)))
    with server.channel() as channel:
        channel.unary_unary(SET_LAST_MESSAGE, request_serializer=_identity)(message, timeout=5)
        call = channel.unary_unary(
            GET_LAST_MESSAGES, request_serializer=_identity, response_deserializer=_identity
        )
        raw = call(request, timeout=5)
    expected = _field(0x12, _field(0x0A, bytes.fromhex(UURI_HEX)) + _field(0x12, b"") + _field(0x1A, message))
    assert expected == raw


# A client that knows only upstream's definitions: upstream's messages, declared
# here from the spec's field table in a private descriptor pool, so nothing of
# the project's protos (SetLastMessage, the ingest extension) is involved.
def _upstream_classes() -> dict[str, Any]:
    def message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
        proto = descriptor_pb2.DescriptorProto(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
        return proto

    fdp = descriptor_pb2.FieldDescriptorProto
    optional, repeated = fdp.LABEL_OPTIONAL, fdp.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(
        name="upstream_only/utwin.proto", package="upstream_only", syntax="proto3"
    )
    file.message_type.extend(
        [
            message(
                "UUri",
                ("authority_name", 1, fdp.TYPE_STRING, optional, ""),
                ("ue_id", 2, fdp.TYPE_UINT32, optional, ""),
                ("ue_version_major", 3, fdp.TYPE_UINT32, optional, ""),
                ("resource_id", 4, fdp.TYPE_UINT32, optional, ""),
            ),
            message("UUriBatch", ("uris", 1, fdp.TYPE_MESSAGE, repeated, ".upstream_only.UUri")),
            message(
                "UStatus",
                ("code", 1, fdp.TYPE_INT32, optional, ""),
                ("message", 2, fdp.TYPE_STRING, optional, ""),
            ),
            message(
                "GetLastMessagesRequest",
                ("topics", 1, fdp.TYPE_MESSAGE, optional, ".upstream_only.UUriBatch"),
            ),
            message(
                "MessageResponse",
                ("topic", 1, fdp.TYPE_MESSAGE, optional, ".upstream_only.UUri"),
                ("status", 2, fdp.TYPE_MESSAGE, optional, ".upstream_only.UStatus"),
                # UMessage read as its bytes: a submessage and a bytes field share one wire form.
                ("message", 3, fdp.TYPE_BYTES, optional, ""),
            ),
            message(
                "GetLastMessagesResponse",
                ("responses", 2, fdp.TYPE_MESSAGE, repeated, ".upstream_only.MessageResponse"),
            ),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    names = ("UUri", "GetLastMessagesRequest", "GetLastMessagesResponse")
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"upstream_only.{name}"))
        for name in names
    }


def test_upstream_only_client_reads_answers(server: ServerThread) -> None:
    """A client built from upstream's field table alone gets one NOT_FOUND entry per topic, in order."""
    classes = _upstream_classes()
    first = classes["UUri"](
        authority_name="vcu.my_vin", ue_id=0x01A40101, ue_version_major=1, resource_id=0x8000
    )
    second = classes["UUri"](authority_name="other", ue_id=0x1234, ue_version_major=2, resource_id=0x8001)
    request = classes["GetLastMessagesRequest"]()
    request.topics.uris.extend([first, second])
    with server.channel() as channel:
        call = channel.unary_unary(
            GET_LAST_MESSAGES,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=classes["GetLastMessagesResponse"].FromString,
        )
        response = call(request, timeout=5)
    assert [(first, ucode_pb2.NOT_FOUND), (second, ucode_pb2.NOT_FOUND)] == [
        (entry.topic, entry.status.code) for entry in response.responses
    ]


def test_upstream_only_client_reads_stored_message(server: ServerThread) -> None:
    """A client built from upstream's field table alone gets OK and the stored message's bytes."""
    classes = _upstream_classes()
    message = publish(uuri(), b"21.5").SerializeToString()
    request = classes["GetLastMessagesRequest"]()
    request.topics.uris.append(
        classes["UUri"](authority_name="vcu.my_vin", ue_id=0x01A40101, ue_version_major=1, resource_id=0x8000)
    )
    with server.channel() as channel:
        channel.unary_unary(SET_LAST_MESSAGE, request_serializer=_identity)(message, timeout=5)
        call = channel.unary_unary(
            GET_LAST_MESSAGES,
            request_serializer=lambda request: request.SerializeToString(),
            response_deserializer=classes["GetLastMessagesResponse"].FromString,
        )
        response = call(request, timeout=5)
    assert [(ucode_pb2.OK, message)] == [(entry.status.code, entry.message) for entry in response.responses]
