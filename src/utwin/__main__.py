"""The `utwin` program's entry point (also `python -m utwin`).

It exists to act before `grpc` is imported: gRPC's C core reads its log
settings once, at that import, and the CLI's modules import grpc.
"""

from __future__ import annotations

import os
import sys

from utwin.logs import quiet_grpc_core


def main() -> int:
    quiet_grpc_core(os.environ)
    from utwin.cli import main as run_command  # imported here: after the C core is quieted

    return run_command()


if __name__ == "__main__":
    sys.exit(main())
