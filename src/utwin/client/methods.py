"""The uTwin-side RPCs the clients call: path and response type, in one table for both shells
(the DigiTwin ones are in `digitwin.py`).

Calls go through the channel's generic multi-callables with these, so neither shell needs the
generated stub modules. A response type is named, not imported, and loaded on the first call of
its method: a command that makes one call imports the protobuf modules of that call only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
    from utwin_proto.uprotocol.v1 import ustatus_pb2
    from utwin_proto.utwin.v1 import admin_pb2, ingest_pb2, watch_pb2

Response = TypeVar("Response")


class Method(Generic[Response]):
    """One RPC: its path, and how its request is written and its response read."""

    def __init__(self, path: str, response_type: str) -> None:
        self.path = path
        self._response_type = response_type  # "module:Message"
        self._from_string: Any = None

    def serialize(self, request: Any) -> bytes:
        return request if isinstance(request, bytes) else request.SerializeToString()

    def deserialize(self, data: bytes) -> Response:
        if self._from_string is None:
            module, _, name = self._response_type.partition(":")
            self._from_string = getattr(importlib.import_module(module), name).FromString
        response: Response = self._from_string(data)
        return response


def method(path: str, response_type: str) -> Method[Any]:
    return Method(path, response_type)


_UTWIN = "/uprotocol.core.utwin.v2.uTwin/"
_UTWIN_PB2 = "utwin_proto.uprotocol.core.utwin.v2.utwin_pb2"
_V1 = "utwin_proto.utwin.v1"

GET_LAST_MESSAGES: Method[utwin_pb2.GetLastMessagesResponse] = method(
    _UTWIN + "GetLastMessages", f"{_UTWIN_PB2}:GetLastMessagesResponse"
)
SET_LAST_MESSAGE: Method[ustatus_pb2.UStatus] = method(
    _UTWIN + "SetLastMessage", "utwin_proto.uprotocol.v1.ustatus_pb2:UStatus"
)
PUBLISH: Method[ingest_pb2.PublishAck] = method("/utwin.v1.Ingest/Publish", f"{_V1}.ingest_pb2:PublishAck")
WATCH_TOPICS: Method[watch_pb2.TopicsResponse] = method(
    "/utwin.v1.Watch/Topics", f"{_V1}.watch_pb2:TopicsResponse"
)
LIST_TOPICS: Method[watch_pb2.ListTopicsResponse] = method(
    "/utwin.v1.Watch/ListTopics", f"{_V1}.watch_pb2:ListTopicsResponse"
)
GET_STATS: Method[admin_pb2.GetStatsResponse] = method(
    "/utwin.v1.Admin/GetStats", f"{_V1}.admin_pb2:GetStatsResponse"
)
FLUSH: Method[admin_pb2.FlushResponse] = method("/utwin.v1.Admin/Flush", f"{_V1}.admin_pb2:FlushResponse")
BACKUP: Method[admin_pb2.BackupResponse] = method("/utwin.v1.Admin/Backup", f"{_V1}.admin_pb2:BackupResponse")
