"""The benchmark floor: a bare grpc.aio server with utwin's method paths and a dict.

No validation, no disk, no newest-wins: it parses each request with the
generated classes, keeps the last message per topic in memory and answers.
Whatever utwin costs beyond this is the price of its rules and durability.

    python tools/bare_server.py --listen 127.0.0.1:0
prints `bare listening on HOST:PORT` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator

import grpc

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import umessage_pb2, uri_pb2, ustatus_pb2
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc

TopicKey = tuple[str, int, int, int]


def _key(uri: uri_pb2.UUri) -> TopicKey:
    return (uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id)


class BareTwin(utwin_pb2_grpc.uTwinServicer, ingest_pb2_grpc.IngestServicer):
    def __init__(self) -> None:
        self.last: dict[TopicKey, umessage_pb2.UMessage] = {}

    async def SetLastMessage(  # noqa: N802 - generated method name
        self, request: umessage_pb2.UMessage, context: grpc.aio.ServicerContext[object, object]
    ) -> ustatus_pb2.UStatus:
        self.last[_key(request.attributes.source)] = request
        return ustatus_pb2.UStatus()

    async def GetLastMessages(  # noqa: N802 - generated method name
        self, request: utwin_pb2.GetLastMessagesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> utwin_pb2.GetLastMessagesResponse:
        response = utwin_pb2.GetLastMessagesResponse()
        for uri in request.topics.uris:
            entry = response.responses.add(topic=uri)
            message = self.last.get(_key(uri))
            if message is None:
                entry.status.code = 5  # NOT_FOUND
            else:
                entry.status.code = 0
                entry.message.CopyFrom(message)
        return response

    async def Publish(  # noqa: N802 - generated method name
        self,
        request_iterator: AsyncIterator[ingest_pb2.PublishRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[ingest_pb2.PublishAck]:
        acknowledged = 0
        async for frame in request_iterator:
            for message in frame.messages:
                self.last[_key(message.attributes.source)] = message
            acknowledged += len(frame.messages)
            yield ingest_pb2.PublishAck(acknowledged=acknowledged, accepted=acknowledged)


async def _serve(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20)])
    twin = BareTwin()
    utwin_pb2_grpc.add_uTwinServicer_to_server(twin, server)
    ingest_pb2_grpc.add_IngestServicer_to_server(twin, server)
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"bare listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    await server.wait_for_termination()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    options = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(options.listen))
    except ImportError:
        asyncio.run(_serve(options.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
