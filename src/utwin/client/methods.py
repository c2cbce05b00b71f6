"""The uTwin-side RPCs the clients call: path, request and response types, in one table for both shells
(the DigiTwin ones are in `digitwin.py`).

Calls go through the channel's generic multi-callables with these, so neither shell needs the
generated stub modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import ustatus_pb2
from utwin_proto.utwin.v1 import admin_pb2, ingest_pb2, watch_pb2

Response = TypeVar("Response")


@dataclasses.dataclass(frozen=True)
class Method(Generic[Response]):
    """One RPC: its path, and how its request is written and its response read."""

    path: str
    response_type: Any  # a generated message class (FromString)

    def serialize(self, request: Any) -> bytes:
        return request if isinstance(request, bytes) else request.SerializeToString()

    def deserialize(self, data: bytes) -> Response:
        return self.response_type.FromString(data)  # type: ignore[no-any-return]


def method(path: str, response_type: type[Response]) -> Method[Response]:
    return Method(path, response_type)


_UTWIN = "/uprotocol.core.utwin.v2.uTwin/"
GET_LAST_MESSAGES = method(_UTWIN + "GetLastMessages", utwin_pb2.GetLastMessagesResponse)
SET_LAST_MESSAGE = method(_UTWIN + "SetLastMessage", ustatus_pb2.UStatus)
PUBLISH = method("/utwin.v1.Ingest/Publish", ingest_pb2.PublishAck)
WATCH_TOPICS = method("/utwin.v1.Watch/Topics", watch_pb2.TopicsResponse)
LIST_TOPICS = method("/utwin.v1.Watch/ListTopics", watch_pb2.ListTopicsResponse)
GET_STATS = method("/utwin.v1.Admin/GetStats", admin_pb2.GetStatsResponse)
FLUSH = method("/utwin.v1.Admin/Flush", admin_pb2.FlushResponse)
BACKUP = method("/utwin.v1.Admin/Backup", admin_pb2.BackupResponse)
