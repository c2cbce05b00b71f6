"""Fixtures: real servers on loopback port 0, each over its own temporary RocksDB folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.servers import Servers, ServerThread
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2_grpc
from utwin_proto.utwin.v1 import ingest_pb2_grpc


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def server(servers: Servers) -> ServerThread:
    return servers.start()


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with server.channel() as opened:
        yield opened


@pytest.fixture
def utwin_stub(channel: grpc.Channel) -> utwin_pb2_grpc.uTwinStub:
    return utwin_pb2_grpc.uTwinStub(channel)


@pytest.fixture
def ingest_stub(channel: grpc.Channel) -> ingest_pb2_grpc.IngestStub:
    return ingest_pb2_grpc.IngestStub(channel)
