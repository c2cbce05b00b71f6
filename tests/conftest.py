"""Fixtures: real servers on loopback port 0, each over its own temporary RocksDB folder.

Also the fix-ups pytest-grpc needs (it serves synchronous servicers for the
tests of clients and of upstream-style peers): a loopback address that leaks
no socket, and the method its fake-server mode lacks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import pytest_grpc.plugin

from tests.redis_cluster import RedisCluster, redis_server_binary, start_cluster
from tests.servers import Servers, ServerThread
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2_grpc
from utwin_proto.utwin.v1 import ingest_pb2_grpc


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed: run bash tools/install_servers.sh")
    with start_cluster(tmp_path_factory.mktemp("redis-cluster"), masters=3, appendfsync="no") as cluster:
        yield cluster


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own, for Blocking views of the async domain and store."""
    opened = asyncio.new_event_loop()
    yield opened
    opened.close()


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


# Generated servicer code registers its methods through this call, which the plugin's
# fake server (--grpc-fake-server) predates; the generic handlers it also adds suffice.
if not hasattr(pytest_grpc.plugin.FakeServer, "add_registered_method_handlers"):
    pytest_grpc.plugin.FakeServer.add_registered_method_handlers = (  # type: ignore[attr-defined]
        lambda self, service_name, method_handlers: None
    )


@pytest.fixture(scope="module")
def grpc_addr() -> Iterator[str]:
    """A free 127.0.0.1 port for pytest-grpc's server, held until the module ends.

    Replaces the plugin's fixture, which binds a socket it never closes (a
    ResourceWarning, an error here). SO_REUSEPORT lets the gRPC server bind the
    same port while this socket, never listening, keeps it from anyone else.
    """
    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{reservation.getsockname()[1]}"
    finally:
        reservation.close()
