"""utwin.v1.Admin: counters of this instance and of its federation peers."""

from __future__ import annotations

from typing import Any

import grpc

from utwin.federation import BreakerState, Federation, PeerStats
from utwin.security.guard import Guard
from utwin.security.policy import Role
from utwin.service.authorize import Authorizer
from utwin.twin import UTwin
from utwin_proto.utwin.v1 import admin_pb2

SERVICE_NAME = "utwin.v1.Admin"

Context = grpc.aio.ServicerContext[object, object]

_BREAKER_STATES = {
    BreakerState.CLOSED: admin_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: admin_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: admin_pb2.BREAKER_STATE_HALF_OPEN,
}


def peer_stats_message(stats: PeerStats) -> admin_pb2.PeerStats:
    counters = stats.counters
    return admin_pb2.PeerStats(
        authority=stats.authority,
        address=stats.address,
        default_route=stats.default_route,
        calls=counters.calls,
        topics_asked=counters.topics_asked,
        hits=counters.hits,
        not_found=counters.not_found,
        failures=counters.failures,
        breaker=_BREAKER_STATES[stats.breaker],
        consecutive_failures=stats.consecutive_failures,
        rejected=counters.rejected,
        joined=counters.joined,
        remembered_not_found=counters.remembered_not_found,
        lookup_stream=stats.lookup_stream,
    )


class AdminServicer:
    def __init__(
        self, twin: UTwin, authority: str, federation: Federation | None, access: Authorizer | None = None
    ) -> None:
        self._twin = twin
        self._access = access or Authorizer(Guard(None))
        self._authority = authority
        self._federation = federation

    async def get_stats(
        self, request: admin_pb2.GetStatsRequest, context: Context
    ) -> admin_pb2.GetStatsResponse:
        self._access.require(Role.ADMIN, "GetStats")
        response = admin_pb2.GetStatsResponse(
            authority=self._authority, topic_count=await self._twin.topic_count()
        )
        if self._federation is not None:
            response.peers.extend(peer_stats_message(stats) for stats in self._federation.stats())
        return response

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "GetStats": grpc.unary_unary_rpc_method_handler(
                self.get_stats,
                request_deserializer=admin_pb2.GetStatsRequest.FromString,
                response_serializer=admin_pb2.GetStatsResponse.SerializeToString,
            ),
        }
