"""A blocking client of utwin.v1.Admin, for the CLI."""

from __future__ import annotations

import grpc

from utwin_proto.utwin.v1 import admin_pb2

GET_STATS_PATH = "/utwin.v1.Admin/GetStats"


def fetch_stats(target: str, timeout_s: float) -> admin_pb2.GetStatsResponse:
    """The counters of the instance at target (HOST:PORT)."""
    with grpc.insecure_channel(target) as channel:
        get_stats = channel.unary_unary(
            GET_STATS_PATH,
            request_serializer=admin_pb2.GetStatsRequest.SerializeToString,
            response_deserializer=admin_pb2.GetStatsResponse.FromString,
        )
        response: admin_pb2.GetStatsResponse = get_stats(admin_pb2.GetStatsRequest(), timeout=timeout_s)
        return response
