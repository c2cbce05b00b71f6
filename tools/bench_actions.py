"""DigiTwin actions benchmark: queued delivery to agents that connect, and invoke-to-completed latency.

    python tools/bench.py actions [--agents 100] [--twins-per-agent 10] [--actions-per-twin 10]
                                  [--rounds 3] [--calls 300]

Each round, against a fresh `utwin serve` in a child process:
  - queue --actions-per-twin actions on each of agents x twins-per-agent
    offline twins (10,000 by default), then all agents connect at once:
    the time until every action was received and every acknowledgement
    applied (each agent half-closes after its acks; the server ends the
    stream only once it has stored them);
  - with one agent online that answers every action at once (ack and
    completed), --calls sequential invocations, each timed from the call to
    the `completed` change on the requester's Watch (p50, p99);
  - the floor, in the same round: --calls sequential unary round trips
    (ReadProperties) to tools/bare_digitwin_server.py, the bare grpc.aio
    server with the same method paths.
Medians over --rounds are printed. Only 127.0.0.1 and temporary folders are used.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_digitwin import bare_server, utwin_server

from utwin.service.digitwin_servicer import agent_metadata
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
PHASE_TIMEOUT_S = 600.0
IN_FLIGHT = 8


def action_td(n: int) -> str:
    return json.dumps(
        {
            "@context": "https://www.w3.org/2022/wot/td/v1.1",
            "id": f"urn:bench:{n}",
            "title": f"Device {n}",
            "properties": {"level": {"type": "number"}},
            "actions": {
                "step": {"utwin:whilePending": "queue", "utwin:whileRunning": "queue"},
                "reboot": {},
            },
        }
    )


async def in_parallel(calls: list[object], in_flight: int = IN_FLIGHT) -> list[object]:
    """Await zero-argument coroutine factories, in_flight at a time, in order."""
    results: list[object] = [None] * len(calls)
    indexes = iter(range(len(calls)))

    async def worker() -> None:
        for index in indexes:
            results[index] = await calls[index]()  # type: ignore[operator]

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return results


async def queue_actions(stub: pb_grpc.DigiTwinStub, options: argparse.Namespace) -> dict[str, int]:
    """Register the twins and queue the actions; actions expected per agent."""
    expected: dict[str, int] = {}
    registrations = []
    for a in range(options.agents):
        agent = f"agent-{a}"
        expected[agent] = options.twins_per_agent * options.actions_per_twin
        for t in range(options.twins_per_agent):
            request = pb.UpdateThingRequest(td_json=action_td(t))
            metadata = agent_metadata(agent)
            registrations.append(
                functools.partial(stub.UpdateThing, request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            )
    twins = [response.twin_id for response in await in_parallel(registrations)]  # type: ignore[attr-defined]
    invocations = [
        lambda twin=twin: stub.InvokeAction(
            pb.InvokeActionRequest(twin_id=twin, name="step"), timeout=CALL_TIMEOUT_S
        )
        for twin in twins
        for _ in range(options.actions_per_twin)
    ]
    await in_parallel(invocations)
    return expected


async def drain_agent(stub: pb_grpc.DigiTwinStub, agent: str, expected: int) -> None:
    """Connect, acknowledge every action, half-close, and wait for the server to end the stream."""
    outgoing: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()

    async def messages():  # type: ignore[no-untyped-def]
        while (message := await outgoing.get()) is not None:
            yield message

    call = stub.Connect(messages(), metadata=agent_metadata(agent), timeout=PHASE_TIMEOUT_S)
    received = 0
    async for instruction in call:
        outgoing.put_nowait(pb.AgentMessage(ack=pb.ActionAck(action_id=instruction.action.action_id)))
        received += 1
        if received == expected:
            outgoing.put_nowait(None)
    if received != expected:
        raise RuntimeError(f"{agent}: {received} actions received, {expected} expected")


async def delivery_s(target: str, options: argparse.Namespace) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        expected = await queue_actions(stub, options)
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(drain_agent(stub, agent, count) for agent, count in expected.items())),
            PHASE_TIMEOUT_S,
        )
        return time.perf_counter() - started


async def invoke_latencies_ms(target: str, calls: int) -> list[float]:
    """Invoke-to-completed times with an agent that answers at once."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        agent = "answering-agent"
        twin = (
            await stub.UpdateThing(
                pb.UpdateThingRequest(td_json=action_td(0)),
                metadata=agent_metadata(agent),
                timeout=CALL_TIMEOUT_S,
            )
        ).twin_id
        outgoing: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()

        async def messages():  # type: ignore[no-untyped-def]
            while True:
                yield await outgoing.get()

        agent_call = stub.Connect(messages(), metadata=agent_metadata(agent), timeout=PHASE_TIMEOUT_S)

        async def answer() -> None:
            async for instruction in agent_call:
                action_id = instruction.action.action_id
                outgoing.put_nowait(pb.AgentMessage(ack=pb.ActionAck(action_id=action_id)))
                done = pb.ActionUpdate(action_id=action_id, state=pb.ACTION_STATE_COMPLETED, output_json="1")
                outgoing.put_nowait(pb.AgentMessage(update=done))

        answering = asyncio.create_task(answer())
        while not (
            await stub.GetThing(pb.GetThingRequest(twin_id=twin), timeout=CALL_TIMEOUT_S)
        ).thing.presence.online:
            await asyncio.sleep(0.01)
        watch = stub.Watch(
            pb.WatchRequest(twin_ids=[twin], kinds=[pb.CHANGE_KIND_ACTION]), timeout=PHASE_TIMEOUT_S
        )
        changes = watch.__aiter__()
        while not (await changes.__anext__()).subscribed:
            pass
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            action = (
                await stub.InvokeAction(
                    pb.InvokeActionRequest(twin_id=twin, name="reboot"), timeout=CALL_TIMEOUT_S
                )
            ).action
            completed = False
            while not completed:
                response = await changes.__anext__()
                completed = any(
                    c.action.action_id == action.action_id and c.action.state == pb.ACTION_STATE_COMPLETED
                    for c in response.changes
                )
            latencies.append((time.perf_counter() - started) * 1000)
        watch.cancel()
        agent_call.cancel()
        answering.cancel()
        return latencies


async def round_trip_ms(target: str, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        await stub.UpdateThing(
            pb.UpdateThingRequest(td_json=action_td(0)),
            metadata=agent_metadata("bare"),
            timeout=CALL_TIMEOUT_S,
        )
        request = pb.ReadRequest(twin_id="dtw:bare:urn%3Abench%3A0")
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.ReadProperties(request, timeout=CALL_TIMEOUT_S)
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(options: argparse.Namespace) -> None:
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch_text:
        scratch = Path(scratch_text)
        for number in range(options.rounds):
            order = ("bare", "utwin") if number % 2 == 0 else ("utwin", "bare")
            for side in order:
                if side == "bare":
                    with bare_server(scratch) as bare:
                        floor = await round_trip_ms(bare.target, options.calls)
                    rows.setdefault("bare round trip p50 ms", []).append(percentile(floor, 0.5))
                    rows.setdefault("bare round trip p99 ms", []).append(percentile(floor, 0.99))
                    continue
                with utwin_server(scratch / f"data-{number}", scratch) as server:
                    rows.setdefault("deliver+ack all s", []).append(await delivery_s(server.target, options))
                    latencies = await invoke_latencies_ms(server.target, options.calls)
                rows.setdefault("invoke->completed p50 ms", []).append(percentile(latencies, 0.5))
                rows.setdefault("invoke->completed p99 ms", []).append(percentile(latencies, 0.99))
    total = options.agents * options.twins_per_agent * options.actions_per_twin
    print(
        f"{total} actions queued on {options.agents * options.twins_per_agent} offline twins of "
        f"{options.agents} agents; medians of {options.rounds} rounds"
    )
    for name, values in rows.items():
        print(f"  {name:28} {statistics.median(values):10.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    delivered = statistics.median(rows["deliver+ack all s"])
    print(f"  delivered and acknowledged: {total / delivered:,.0f} actions/s")
    ratio = statistics.median(rows["invoke->completed p50 ms"]) / statistics.median(
        rows["bare round trip p50 ms"]
    )
    print(f"  invoke->completed p50 / bare round trip p50: {ratio:.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--twins-per-agent", type=int, default=10)
    parser.add_argument("--actions-per-twin", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
