"""Fairness: unary throughput of 32 clients with and without one full-speed ingest stream beside them.

Alternates, in each round: unary alone, ingest alone, both together; each
load runs in its own child process. Prints medians over the rounds and the
ratios: unary beside ingest / unary alone (target >= 0.5) and ingest beside
unary / ingest alone (target >= 0.8).

Those targets are speed, which lives in benchmarks: the short form that CI
runs (`enforce_targets=False`) prints the ratios and fails only on errors or
on starvation (unary beside ingest below STARVATION_FLOOR of alone, where the
defect this part was written for stood at 0.04x), a bar no noisy run crosses.
"""

from __future__ import annotations

import statistics

from .common import PartResult, ServeProcess, finish_load, start_load, temporary_folder

UNARY_CLIENTS = 32
UNARY_TARGET = 0.5
INGEST_TARGET = 0.8
STARVATION_FLOOR = 0.15


def _rate(figures: dict[str, object]) -> float:
    value = figures.get("items_per_s", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def run(rounds: int, seconds: float, enforce_targets: bool = True) -> PartResult:
    result = PartResult("fairness")
    unary_alone: list[float] = []
    unary_beside: list[float] = []
    ingest_alone: list[float] = []
    ingest_beside: list[float] = []
    p50_alone: list[float] = []
    p50_beside: list[float] = []
    errors = 0
    timeout_s = seconds + 60
    with (
        temporary_folder("utwin-fairness-") as folder,
        ServeProcess(folder / "data", folder / "serve.log") as server,
    ):
        for _ in range(rounds):
            alone = finish_load(start_load("unary", server.target, UNARY_CLIENTS, seconds), timeout_s)
            ingest = finish_load(start_load("ingest", server.target, 1, seconds), timeout_s)
            unary_process = start_load("unary", server.target, UNARY_CLIENTS, seconds)
            ingest_process = start_load("ingest", server.target, 1, seconds)
            beside = finish_load(unary_process, timeout_s)
            ingest_with = finish_load(ingest_process, timeout_s)
            unary_alone.append(_rate(alone))
            unary_beside.append(_rate(beside))
            ingest_alone.append(_rate(ingest))
            ingest_beside.append(_rate(ingest_with))
            p50_alone.append(float(alone.get("p50_ms", 0.0)))  # type: ignore[arg-type]
            p50_beside.append(float(beside.get("p50_ms", 0.0)))  # type: ignore[arg-type]
            for figures in (alone, ingest, beside, ingest_with):
                errors += int(figures.get("errors", 0))  # type: ignore[call-overload]
                if figures.get("errors"):
                    print(f"    errors: {figures.get('error_samples')}")
    unary_ratio = statistics.median(unary_beside) / max(statistics.median(unary_alone), 1e-9)
    ingest_ratio = statistics.median(ingest_beside) / max(statistics.median(ingest_alone), 1e-9)
    result.figure("rounds (alternating alone / beside)", rounds)
    result.figure(f"unary calls/s, {UNARY_CLIENTS} clients alone", f"{statistics.median(unary_alone):,.0f}")
    result.figure(
        f"unary calls/s, {UNARY_CLIENTS} clients beside ingest", f"{statistics.median(unary_beside):,.0f}"
    )
    result.figure(
        "unary p50 ms alone / beside",
        f"{statistics.median(p50_alone):.1f} / {statistics.median(p50_beside):.1f}",
    )
    result.figure("ingest msg/s alone", f"{statistics.median(ingest_alone):,.0f}")
    result.figure("ingest msg/s beside unary", f"{statistics.median(ingest_beside):,.0f}")
    result.figure("unary ratio (target >= 0.5)", f"{unary_ratio:.2f}x")
    result.figure("ingest ratio (target >= 0.8)", f"{ingest_ratio:.2f}x")
    result.figure("errors", errors)
    if enforce_targets:
        result.check(
            unary_ratio >= UNARY_TARGET, f"unary beside ingest >= {UNARY_TARGET}x alone ({unary_ratio:.2f}x)"
        )
        result.check(
            ingest_ratio >= INGEST_TARGET,
            f"ingest beside unary >= {INGEST_TARGET}x alone ({ingest_ratio:.2f}x)",
        )
    else:
        result.check(
            unary_ratio >= STARVATION_FLOOR,
            f"unary beside ingest not starved: >= {STARVATION_FLOOR}x alone ({unary_ratio:.2f}x)",
        )
    result.check(errors == 0, f"no errors ({errors})")
    return result


def main_args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median; default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load (default 5)")


def run_args(args) -> PartResult:  # type: ignore[no-untyped-def]
    return run(args.rounds, args.seconds)
