"""Exit 0 when the utwin on this host answers the gRPC health check SERVING, else 1 (a container probe).

UTWIN_HEALTH_TARGET is the address (127.0.0.1:50051 unless set). When the server
serves TLS, UTWIN_TLS_CA names the CA file that signed its certificate, and the
target must carry a name the certificate holds (localhost:50051).
"""

from __future__ import annotations

import os
import sys

TIMEOUT_S = 3.0


def main() -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # before grpc is imported: a probe prints nothing
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = os.environ.get("UTWIN_HEALTH_TARGET", "127.0.0.1:50051")
    ca_file = os.environ.get("UTWIN_TLS_CA")
    if ca_file:
        with open(ca_file, "rb") as ca:
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.read()))
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            check = health_pb2_grpc.HealthStub(channel).Check
            answer = check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            print(f"utwin health: {error.code().name}", file=sys.stderr)
            return 1
    serving = answer.status == health_pb2.HealthCheckResponse.SERVING
    print(f"utwin health: {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
