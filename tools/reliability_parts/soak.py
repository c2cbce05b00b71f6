"""Soak: 64 clients mixing uTwin Set/Get, ingest streams and DigiTwin publish/read for a while.

Samples the server's RSS and open file descriptors every second; 0 errors is
the invariant, and open files must come back to their starting count once
the clients have gone.
"""

from __future__ import annotations

import time

from .common import PartResult, ServeProcess, finish_load, poll, start_load, temporary_folder

LOAD_PROCESSES = 2
FD_SLACK = 8


def run(seconds: float, clients: int) -> PartResult:
    result = PartResult("soak")
    rss_mib: list[float] = []
    open_files: list[int] = []
    with (
        temporary_folder("utwin-soak-") as folder,
        ServeProcess(folder / "data", folder / "serve.log") as server,
    ):
        files_before, rss_before = server.open_files(), server.rss_kib() / 1024
        loads = [
            start_load("mix", server.target, clients // LOAD_PROCESSES, seconds, frame=100, tag=str(n))
            for n in range(LOAD_PROCESSES)
        ]
        deadline = time.monotonic() + seconds + 5
        while time.monotonic() < deadline and any(load.poll() is None for load in loads):
            if server.alive():
                rss_mib.append(server.rss_kib() / 1024)
                open_files.append(server.open_files())
            time.sleep(1.0)
        figures = [finish_load(load, 60) for load in loads]
        alive = server.alive()
        files_back = alive and poll(lambda: server.open_files() <= files_before + FD_SLACK, 10)
        files_after = server.open_files() if alive else -1
    errors = sum(int(f.get("errors", 0)) for f in figures)  # type: ignore[call-overload]
    ingested = sum(int(f.get("ingested", 0)) for f in figures)  # type: ignore[call-overload]
    calls = sum(int(f.get("items", 0)) for f in figures) - ingested  # type: ignore[call-overload]
    result.figure("clients x seconds", f"{clients} x {seconds:g}")
    result.figure("unary calls (uTwin and DigiTwin) / messages ingested", f"{calls:,} / {ingested:,}")
    p99 = max(float(f.get("p99_ms", 0.0)) for f in figures)  # type: ignore[arg-type]
    result.figure("unary p99 ms (worst load process)", f"{p99:.0f}")
    result.figure("errors", errors)
    for f in figures:
        if f.get("errors"):
            print(f"    error samples: {f.get('error_samples')}")
    result.figure(
        "RSS MiB before / max / last",
        f"{rss_before:.0f} / {max(rss_mib, default=0):.0f} / {rss_mib[-1] if rss_mib else 0:.0f}",
    )
    result.figure(
        "open files before / max / after clients left",
        f"{files_before} / {max(open_files, default=0)} / {files_after}",
    )
    result.check(alive, "the server survived the soak")
    result.check(errors == 0, f"0 errors ({errors})")
    result.check(
        bool(files_back),
        f"open files back to {files_before} (+{FD_SLACK}) after the clients left ({files_after})",
    )
    return result


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients run (default 60)")
    parser.add_argument("--clients", type=int, default=64, help="clients in all (default 64)")


def run_args(args) -> PartResult:  # type: ignore[no-untyped-def]
    return run(args.seconds, args.clients)
