"""DigiTwin Watch through a real server: filters, current state, fan-out, overflow."""

from __future__ import annotations

import asyncio
import json
import threading

import grpc

from tests.digitwin.helpers import (
    AGENT,
    OTHER_AGENT,
    TIMEOUT_S,
    as_agent,
    changes_of,
    publish,
    register,
    subscribed_stream,
    thing_td,
    wait_for,
)
from tests.servers import Servers, ServerThread
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc


def _hub_subscribers(server: ServerThread) -> int:
    assert server.running is not None
    return server.running.digitwin.hub.subscriber_count


def test_exactly_one_td_updated_per_update(stub: pb_grpc.DigiTwinStub) -> None:
    """Three UpdateThing calls give three TD_UPDATED changes, no more."""
    stream = subscribed_stream(stub, pb.WatchRequest(agent_id=AGENT))
    twin_id = ""
    for title in ("A", "B", "C"):
        twin_id = register(stub, thing_td(title=title))
    publish(stub, twin_id, {"temperature": 1})  # a sentinel: it comes after every TD change
    changes = changes_of(stream, 4)
    stream.cancel()  # type: ignore[attr-defined]
    assert [pb.CHANGE_KIND_TD_UPDATED] * 3 + [pb.CHANGE_KIND_PROPERTY] == [change.kind for change in changes]


def test_td_deleted_is_notified(stub: pb_grpc.DigiTwinStub) -> None:
    """DeleteThing gives a TD_DELETED change naming the twin."""
    twin_id = register(stub)
    stream = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id]))
    stub.DeleteThing(pb.DeleteThingRequest(twin_id=twin_id), metadata=as_agent(), timeout=TIMEOUT_S)
    (change,) = changes_of(stream, 1)
    stream.cancel()  # type: ignore[attr-defined]
    assert (pb.CHANGE_KIND_TD_DELETED, twin_id) == (change.kind, change.twin_id)


def test_name_and_kind_filters(stub: pb_grpc.DigiTwinStub) -> None:
    """A watch on property `humidity` receives only that property's changes."""
    twin_id = register(stub)
    request = pb.WatchRequest(names=["humidity"], kinds=[pb.CHANGE_KIND_PROPERTY])
    stream = subscribed_stream(stub, request)
    publish(stub, twin_id, {"temperature": 20})
    register(stub)
    publish(stub, twin_id, {"humidity": 55})
    (change,) = changes_of(stream, 1)
    stream.cancel()  # type: ignore[attr-defined]
    assert ("humidity", "55") == (change.name, change.value.json)


def test_agent_filter(stub: pb_grpc.DigiTwinStub) -> None:
    """A watch on one agent does not receive changes of another agent's twins."""
    stream = subscribed_stream(stub, pb.WatchRequest(agent_id=OTHER_AGENT))
    register(stub, thing_td("urn:mine"))
    theirs = register(stub, thing_td("urn:theirs"), agent=OTHER_AGENT)
    (change,) = changes_of(stream, 1)
    stream.cancel()  # type: ignore[attr-defined]
    assert theirs == change.twin_id


def test_current_state_comes_first_then_changes(stub: pb_grpc.DigiTwinStub) -> None:
    """With include_current_state, the TD and values come first, marked, then live changes."""
    twin_id = register(stub)
    publish(stub, twin_id, {"temperature": 1})
    responses = stub.Watch(pb.WatchRequest(twin_ids=[twin_id], include_current_state=True), timeout=TIMEOUT_S)
    current: list[pb.Change] = []
    for response in responses:
        current.extend(response.changes)
        if response.subscribed:
            break
    publish(stub, twin_id, {"temperature": 2})
    (live,) = changes_of(responses, 1)
    responses.cancel()  # type: ignore[attr-defined]
    assert [
        (pb.CHANGE_KIND_TD_UPDATED, "", True),
        (pb.CHANGE_KIND_PROPERTY, "1", True),
        (pb.CHANGE_KIND_PROPERTY, "2", False),
    ] == [(c.kind, c.value.json, c.current_state) for c in [*current, live]]


def test_current_state_seam_misses_and_doubles_nothing(stub: pb_grpc.DigiTwinStub) -> None:
    """Subscribing with current state while values stream in gives each later value exactly once."""
    twin_id = register(stub)
    last = 400
    publish(stub, twin_id, {"temperature": 0}, timestamp_ms=1_000_000)
    writer_stub = stub

    def write_values() -> None:
        for n in range(1, last + 1):
            publish(writer_stub, twin_id, {"temperature": n}, timestamp_ms=1_000_000 + n)

    writer = threading.Thread(target=write_values)
    writer.start()
    wait_for(
        lambda: (
            stub.ReadProperties(pb.ReadRequest(twin_id=twin_id), timeout=TIMEOUT_S).values["temperature"].json
            != "0"
        )
    )
    request = pb.WatchRequest(twin_ids=[twin_id], names=["temperature"], include_current_state=True)
    responses = stub.Watch(request, timeout=TIMEOUT_S)
    seen: list[int] = []
    for response in responses:
        seen += [int(change.value.json) for change in response.changes if change.name == "temperature"]
        if seen and seen[-1] == last:
            break
    responses.cancel()  # type: ignore[attr-defined]
    writer.join(TIMEOUT_S)
    assert list(range(seen[0], last + 1)) == seen


def test_100_watchers_each_get_each_change_once(server: ServerThread, stub: pb_grpc.DigiTwinStub) -> None:
    """100 concurrent Watch streams each receive every change once; after cancelling none remains."""
    twin_id = register(stub)
    values = [json.dumps(n) for n in range(5)]

    async def watch_all() -> list[list[str]]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            aio_stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
            calls = [
                aio_stub.Watch(pb.WatchRequest(twin_ids=[twin_id]), timeout=TIMEOUT_S) for _ in range(100)
            ]
            for call in calls:
                assert (await call.read()).subscribed
            for value in values:
                request = pb.PublishPropertiesRequest(twin_id=twin_id)
                request.values["temperature"].json = value
                await aio_stub.PublishProperties(request, metadata=as_agent(), timeout=TIMEOUT_S)
            received: list[list[str]] = []
            for call in calls:
                got: list[str] = []
                while len(got) < len(values):
                    got += [change.value.json for change in (await call.read()).changes]
                received.append(got)
            for call in calls:
                call.cancel()
            return received

    received = asyncio.run(watch_all())
    assert [values] * 100 == received
    wait_for(lambda: _hub_subscribers(server) == 0)
    assert 0 == _hub_subscribers(server)


def test_slow_subscriber_overflows_with_resource_exhausted(servers: Servers) -> None:
    """A burst larger than the watch buffer ends that stream with RESOURCE_EXHAUSTED; ingest succeeds."""
    server = servers.start(watch_buffer=4)
    names = tuple(f"p{n}" for n in range(20))
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)  # type: ignore[no-untyped-call]
        twin_id = register(stub, thing_td(properties=names))
        stream = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id]))
        ignored = publish(stub, twin_id, {name: 1 for name in names})
        try:
            for _ in stream:
                pass
        except grpc.RpcError as error:
            outcome = (error.code(), "reads too slowly" in error.details())  # type: ignore[attr-defined]
        else:
            outcome = (grpc.StatusCode.OK, False)
    assert ([], (grpc.StatusCode.RESOURCE_EXHAUSTED, True)) == (ignored, outcome)


def test_watch_with_a_bad_twin_id_is_invalid(stub: pb_grpc.DigiTwinStub) -> None:
    """A Watch naming a malformed twin id ends with INVALID_ARGUMENT."""
    stream = stub.Watch(pb.WatchRequest(twin_ids=["not-a-twin"]), timeout=TIMEOUT_S)
    code = grpc.StatusCode.OK
    try:
        next(stream)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
    assert grpc.StatusCode.INVALID_ARGUMENT == code
