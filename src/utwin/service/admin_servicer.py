"""utwin.v1.Admin: counters of this instance, its federation peers and its bus taps; flushes; backups."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from utwin import uuid
from utwin.errors import FailedPrecondition, InvalidArgument
from utwin.federation import BreakerState, Federation, PeerStats
from utwin.security.guard import Guard
from utwin.security.policy import Role
from utwin.service.authorize import Authorizer
from utwin.service.watch_servicer import pattern_of
from utwin.taps.running import Tap
from utwin.topic_watch import TopicPattern, device_scope
from utwin.twin import UTwin
from utwin_proto.utwin.v1 import admin_pb2

SERVICE_NAME = "utwin.v1.Admin"

Context = grpc.aio.ServicerContext[object, object]

_BREAKER_STATES = {
    BreakerState.CLOSED: admin_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: admin_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: admin_pb2.BREAKER_STATE_HALF_OPEN,
}


def tap_stats_message(tap: Tap) -> admin_pb2.TapStats:
    """A tap's counters as the Admin API reports them."""
    return admin_pb2.TapStats(
        name=tap.settings.name, connected=tap.connected, **dataclasses.asdict(tap.counters)
    )


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


# Writes a consistent copy of the store into a new folder (RocksStore.backup).
BackupWriter = Callable[[Path], Awaitable[None]]
_BACKUP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class AdminServicer:
    def __init__(
        self,
        twin: UTwin,
        authority: str,
        federation: Federation | None,
        access: Authorizer | None = None,
        backup: BackupWriter | None = None,
        backup_dir: Path | None = None,
        taps: Sequence[Tap] = (),
        on_flushed: Callable[[Sequence[TopicPattern], int], None] | None = None,
    ) -> None:
        self._twin = twin
        self._access = access or Authorizer(Guard(None))
        self._authority = authority
        self._federation = federation
        self._backup = backup
        self._backup_dir = backup_dir
        self._taps = taps
        self._on_flushed = on_flushed

    async def get_stats(
        self, request: admin_pb2.GetStatsRequest, context: Context
    ) -> admin_pb2.GetStatsResponse:
        self._access.require(Role.ADMIN, "GetStats")
        response = admin_pb2.GetStatsResponse(
            authority=self._authority, topic_count=await self._twin.topic_count()
        )
        if self._federation is not None:
            response.peers.extend(peer_stats_message(stats) for stats in self._federation.stats())
        response.taps.extend(tap_stats_message(tap) for tap in self._taps)
        return response

    async def flush(self, request: admin_pb2.FlushRequest, context: Context) -> admin_pb2.FlushResponse:
        self._access.require(Role.ADMIN, "Flush")
        now_ms = uuid.now_ms()
        scope = request.WhichOneof("scope")
        if scope == "topics":
            uris = request.topics.uris
            if not uris:
                raise InvalidArgument("topics.uris: name at least one topic to flush")
            limit = self._twin.limits.max_batch_topics
            if len(uris) > limit:
                raise InvalidArgument(f"topics.uris: {len(uris)} topics, above max_batch_topics ({limit})")
            removed = await self._twin.flush_topics(uris, now_ms)
            scopes = [pattern_of(uri, "topics.uris") for uri in uris]
        elif scope == "device":
            device = request.device
            ue_id = device.ue_id if device.HasField("ue_id") else None
            removed = await self._twin.flush_device(device.authority, ue_id, now_ms)
            scopes = [device_scope(device.authority, ue_id)]
        else:
            raise InvalidArgument("scope: set topics or device")
        if self._on_flushed is not None:
            self._on_flushed(scopes, now_ms)
        return admin_pb2.FlushResponse(removed=removed)

    async def backup(self, request: admin_pb2.BackupRequest, context: Context) -> admin_pb2.BackupResponse:
        self._access.require(Role.ADMIN, "Backup")
        if self._backup is None:
            raise FailedPrecondition(
                "backup: this server keeps its topics in a Redis Cluster; back up the cluster's nodes"
            )
        if self._backup_dir is None:
            raise FailedPrecondition("backup_dir: not set on the server, so backups are off")
        name = request.name or time.strftime("utwin-%Y%m%dT%H%M%SZ", time.gmtime())
        if not _BACKUP_NAME.fullmatch(name):
            raise InvalidArgument(
                f"name: {name[:40]!r} is not a folder name (letters, digits, '.', '_', '-')"
            )
        path = self._backup_dir / name
        if path.exists():
            raise FailedPrecondition(f"name: {name} already exists under backup_dir")
        self._backup_dir.mkdir(parents=True, exist_ok=True)
        await self._backup(path)
        return admin_pb2.BackupResponse(path=str(path))

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "Backup": grpc.unary_unary_rpc_method_handler(
                self.backup,
                request_deserializer=admin_pb2.BackupRequest.FromString,
                response_serializer=admin_pb2.BackupResponse.SerializeToString,
            ),
            "Flush": grpc.unary_unary_rpc_method_handler(
                self.flush,
                request_deserializer=admin_pb2.FlushRequest.FromString,
                response_serializer=admin_pb2.FlushResponse.SerializeToString,
            ),
            "GetStats": grpc.unary_unary_rpc_method_handler(
                self.get_stats,
                request_deserializer=admin_pb2.GetStatsRequest.FromString,
                response_serializer=admin_pb2.GetStatsResponse.SerializeToString,
            ),
        }
