"""A blocking client of utwin.v1.Admin, for the CLI."""

from __future__ import annotations

from utwin.service.client import PLAINTEXT, ClientCredentials, open_channel
from utwin_proto.utwin.v1 import admin_pb2

GET_STATS_PATH = "/utwin.v1.Admin/GetStats"
FLUSH_PATH = "/utwin.v1.Admin/Flush"
BACKUP_PATH = "/utwin.v1.Admin/Backup"


def fetch_stats(
    target: str, timeout_s: float, credentials: ClientCredentials = PLAINTEXT
) -> admin_pb2.GetStatsResponse:
    """The counters of the instance at target (HOST:PORT)."""
    with open_channel(target, credentials) as channel:
        get_stats = channel.unary_unary(
            GET_STATS_PATH,
            request_serializer=admin_pb2.GetStatsRequest.SerializeToString,
            response_deserializer=admin_pb2.GetStatsResponse.FromString,
        )
        response: admin_pb2.GetStatsResponse = get_stats(
            admin_pb2.GetStatsRequest(), metadata=credentials.metadata(), timeout=timeout_s
        )
        return response


def flush(
    target: str, request: admin_pb2.FlushRequest, timeout_s: float, credentials: ClientCredentials = PLAINTEXT
) -> int:
    """Flush the request's scope at target; how many topics were removed."""
    with open_channel(target, credentials) as channel:
        call = channel.unary_unary(
            FLUSH_PATH,
            request_serializer=admin_pb2.FlushRequest.SerializeToString,
            response_deserializer=admin_pb2.FlushResponse.FromString,
        )
        response: admin_pb2.FlushResponse = call(request, metadata=credentials.metadata(), timeout=timeout_s)
        return response.removed


def take_backup(target: str, name: str, timeout_s: float, credentials: ClientCredentials = PLAINTEXT) -> str:
    """Have the server at target back its store up; the folder written, on the server's machine."""
    with open_channel(target, credentials) as channel:
        call = channel.unary_unary(
            BACKUP_PATH,
            request_serializer=admin_pb2.BackupRequest.SerializeToString,
            response_deserializer=admin_pb2.BackupResponse.FromString,
        )
        response: admin_pb2.BackupResponse = call(
            admin_pb2.BackupRequest(name=name), metadata=credentials.metadata(), timeout=timeout_s
        )
        return response.path
