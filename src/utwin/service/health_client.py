"""A blocking client of the gRPC health service: is the server there and SERVING?"""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from utwin.client.channel import PLAINTEXT, ClientCredentials, open_channel
from utwin.client.errors import call_failed

SERVING = "SERVING"
# A server still starting refuses connections; gRPC's default reconnect backoff (1 s, growing)
# would make a readiness wait overshoot by seconds, so the wait reconnects every 100-250 ms.
_QUICK_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
)
_PAUSE_WHILE_NOT_SERVING_S = 0.1


def check_health(target: str, timeout_s: float, credentials: ClientCredentials = PLAINTEXT) -> str:
    """The server's overall health status by name (SERVING, NOT_SERVING, ...); CallFailed if unreachable."""
    with open_channel(target, credentials) as channel:
        try:
            return _check(health_pb2_grpc.HealthStub(channel), timeout_s, credentials, wait=False)
        except grpc.RpcError as error:
            raise call_failed(error) from error


def wait_until_serving(target: str, timeout_s: float, credentials: ClientCredentials = PLAINTEXT) -> str:
    """Poll until the server answers SERVING or timeout_s passes; the last status seen by name.

    Raises the last call failure (CallFailed) when the server never answered at all.
    """
    deadline = time.monotonic() + timeout_s
    status = ""
    with open_channel(target, credentials, _QUICK_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            try:
                status = _check(stub, max(remaining, 0.001), credentials, wait=True)
            except grpc.RpcError as error:
                if time.monotonic() >= deadline or error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise call_failed(error) from error
            if status == SERVING or time.monotonic() >= deadline:
                return status
            time.sleep(min(_PAUSE_WHILE_NOT_SERVING_S, max(deadline - time.monotonic(), 0)))


def _check(
    stub: health_pb2_grpc.HealthStub, timeout_s: float, credentials: ClientCredentials, wait: bool
) -> str:
    response: health_pb2.HealthCheckResponse = stub.Check(
        health_pb2.HealthCheckRequest(service=""),
        metadata=credentials.metadata(),
        timeout=timeout_s,
        wait_for_ready=wait,
    )
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
