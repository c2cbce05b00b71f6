"""Reliability suite: utwin driven from outside through the faults a fleet operator meets.

    python tools/reliability.py crash [--rounds 20] [--seconds 3]  kill -9 under load, nothing lost
    python tools/reliability.py fuzz [--cases 200]                 malformed input to every method
    python tools/reliability.py peers [--calls 20]                 absent, silent, garbage, stopped, killed
    python tools/reliability.py disk                               disk full on a small tmpfs, then space
    python tools/reliability.py soak [--seconds 60]                64 clients, RSS and open files sampled
    python tools/reliability.py fairness [--rounds 3]              unary beside a full-speed ingest stream
    python tools/reliability.py short                              all of the above, short (CI runs it)

Each part starts real `utwin serve` processes on 127.0.0.1 over temporary
folders, prints its figures, and exits 1 when one of its invariants is
violated (2 on a usage error). Figures are measured on the machine as it is:
run nothing else heavy meanwhile and compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from reliability_parts import crash, disk, fairness, fuzz, load, peers, soak
from reliability_parts.common import PartResult

PARTS = {
    "crash": crash,
    "fuzz": fuzz,
    "peers": peers,
    "disk": disk,
    "soak": soak,
    "fairness": fairness,
}

# The short form: every part, scaled down so that all of them take a few minutes. Fairness
# prints its speed ratios there but checks only for starvation: speed is gated by benchmarks.
SHORT: list[tuple[str, Callable[[], PartResult]]] = [
    ("crash", lambda: crash.run(rounds=3, seconds=1.5)),
    ("fuzz", lambda: fuzz.run(cases=40, frame_bytes=2 << 20, frame_rounds=2)),
    ("peers", lambda: peers.run(calls=5)),
    ("disk", lambda: disk.run()),
    ("soak", lambda: soak.run(seconds=10.0, clients=64)),
    ("fairness", lambda: fairness.run(rounds=3, seconds=2.0, enforce_targets=False)),
]


def _summary(results: list[PartResult]) -> int:
    print("\nsummary")
    for result in results:
        verdict = "SKIPPED: " + result.skipped if result.skipped else "ok"
        if result.violations:
            verdict = "FAILED: " + "; ".join(result.violations)
        print(f"  {result.name}: {verdict}")
    return 1 if any(result.violations for result in results) else 0


def _run_part(name: str, body: Callable[[], PartResult]) -> PartResult:
    print(f"{name}", flush=True)
    started = time.monotonic()
    result = body()
    print(f"  ({name} took {time.monotonic() - started:.1f} s)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="part", required=True)
    for name, module in PARTS.items():
        module.main_args(commands.add_parser(name, help=(module.__doc__ or "").splitlines()[0]))
    commands.add_parser("short", help="every part in a short form (a few minutes in all)")
    load.main_args(commands.add_parser("load", help="(internal) a load generator child process"))
    args = parser.parse_args(argv)
    if args.part == "load":
        return load.run_args(args)
    if args.part == "short":
        return _summary([_run_part(name, body) for name, body in SHORT])
    return _summary([_run_part(args.part, lambda: PARTS[args.part].run_args(args))])


if __name__ == "__main__":
    sys.exit(main())
