"""DigiTwin fixtures: a stub on the shared test server."""

from __future__ import annotations

import grpc
import pytest

from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc


@pytest.fixture
def stub(channel: grpc.Channel) -> digitwin_pb2_grpc.DigiTwinStub:
    return digitwin_pb2_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
