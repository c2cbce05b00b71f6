"""End-to-end: what is set is served, byte for byte, through real gRPC."""

from __future__ import annotations

from tests.messages import publish, uuri
from tests.servers import Servers
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2


def test_set_then_get_returns_the_same_message(utwin_stub: utwin_pb2_grpc.uTwinStub) -> None:
    """A stored message comes back unchanged with status OK."""
    message = publish(uuri(), b"21.5")
    status = utwin_stub.SetLastMessage(message, timeout=5)
    assert ucode_pb2.OK == status.code

    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.append(uuri())
    response = utwin_stub.GetLastMessages(request, timeout=5)

    assert 1 == len(response.responses)
    assert ucode_pb2.OK == response.responses[0].status.code
    assert message.SerializeToString() == response.responses[0].message.SerializeToString()


def test_without_value_memory_reads_come_from_rocksdb(servers: Servers) -> None:
    """With value_memory_mb = 0 every read goes to RocksDB and still serves what was set."""
    server = servers.start(value_memory_mb=0)
    message = publish(uuri(), b"from disk")
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        assert ucode_pb2.OK == stub.SetLastMessage(message, timeout=5).code
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.append(uuri())
        response = stub.GetLastMessages(request, timeout=5)
    assert message.SerializeToString() == response.responses[0].message.SerializeToString()
    assert server.running is not None
    assert 0 == server.running.store.engine.remembered_bytes
