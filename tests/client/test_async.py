"""The AsyncClient: every method against a real server, with coalescing on (the default) and off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from tests.digitwin.agents import writable_td
from tests.messages import publish, uuri
from tests.servers import ServerThread
from utwin.client import AsyncClient, CallFailed
from utwin.errors import Code
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb

TOPIC = "up://vcu.my_vin/1A40101/1/8000"
MISSING = "up://vcu.my_vin/1A40101/1/8001"
TIMEOUT_S = 10.0
T = TypeVar("T")


def run_with(server: ServerThread, scenario: Callable[[AsyncClient], Awaitable[T]], **options: object) -> T:
    """Run scenario with an AsyncClient of server on an event loop of its own."""

    async def main() -> T:
        async with AsyncClient(server.target, timeout_s=TIMEOUT_S, agent="gateway-1", **options) as client:  # type: ignore[arg-type]
            return await scenario(client)

    return asyncio.run(main())


@pytest.mark.parametrize("coalesce", [True, False])
def test_set_get_and_get_one(server: ServerThread, coalesce: bool) -> None:
    """set stores a message; get and get_one answer it, and NOT_FOUND for a missing topic."""
    message = publish(uuri())

    async def scenario(client: AsyncClient) -> tuple[object, ...]:
        status = await client.set(message)
        answers = await client.get([TOPIC, MISSING])
        one = await client.get_one(TOPIC)
        missing = await client.get([MISSING])
        return status.code, [a.status.code for a in answers], one.message, missing[0].status.code

    assert (Code.OK, [Code.OK, Code.NOT_FOUND], message, Code.NOT_FOUND) == run_with(
        server, scenario, coalesce=coalesce
    )


def test_ingest_stream_answers_each_message(server: ServerThread) -> None:
    """An ingest stream answers every message: OK, or its own rejection; the summary counts them."""
    messages = [publish(uuri(resource=0x8000 + n)) for n in range(3)]
    messages.insert(1, publish(uuri(resource=0x0001)))  # not a topic

    async def scenario(client: AsyncClient) -> tuple[object, ...]:
        async with client.ingest() as stream:
            statuses = await stream.send_many(messages)
            last = await stream.send(publish(uuri(resource=0x8010)))
        return [status.code for status in statuses], last.code, stream.summary.accepted

    assert ([Code.OK, Code.INVALID_ARGUMENT, Code.OK, Code.OK], Code.OK, 4) == run_with(server, scenario)


def test_a_closed_ingest_stream_takes_no_more_messages(server: ServerThread) -> None:
    """send after close fails FAILED_PRECONDITION at once instead of waiting for an answer."""

    async def scenario(client: AsyncClient) -> Code:
        stream = client.ingest()
        await stream.send(publish(uuri()))
        await stream.close()
        try:
            await stream.send(publish(uuri()))
        except CallFailed as refused:
            return refused.code
        return Code.OK

    assert Code.FAILED_PRECONDITION == run_with(server, scenario)


def test_watch_list_topics_flush_and_stats(server: ServerThread) -> None:
    """watch gives the stored message, list_topics its topic, stats the count; flush removes it."""
    message = publish(uuri())

    async def scenario(client: AsyncClient) -> tuple[object, ...]:
        await client.set(message)
        watched = (await anext(aiter(client.watch("up://*", timeout_s=TIMEOUT_S)))).messages[0]
        listed = [stored.topic async for stored in client.list_topics()]
        count = (await client.stats()).topic_count
        removed = await client.flush([TOPIC])
        return watched, listed, count, removed, (await client.get_one(TOPIC)).status.code

    assert (message, [uuri()], 1, 1, Code.NOT_FOUND) == run_with(server, scenario)


def test_a_failed_call_raises_call_failed() -> None:
    """A server that is not there: CallFailed UNAVAILABLE for get_one (coalesced) and set (stream)."""

    async def main() -> list[Code]:
        codes = []
        async with AsyncClient("127.0.0.1:1", timeout_s=TIMEOUT_S) as client:
            for call in (client.get_one(TOPIC), client.set(publish(uuri()))):
                try:
                    await call
                except CallFailed as failure:
                    codes.append(failure.code)
        return codes

    assert [Code.UNAVAILABLE, Code.UNAVAILABLE] == asyncio.run(main())


def test_digitwin_calls(server: ServerThread) -> None:
    """The DigiTwin calls of the asyncio client: register, get, list, publish, read, write, invoke, watch."""

    async def scenario(client: AsyncClient) -> tuple[object, ...]:
        twins = client.digitwin
        twin_id = (await twins.update_thing(json.dumps(writable_td()))).twin_id
        await twins.publish_properties(twin_id, {"temperature": "21.5"})
        thing = await twins.get_thing(twin_id)
        listed = [listed.twin_id async for listed in twins.list_things()]
        values = {name: value.json for name, value in (await twins.read(twin_id, ["temperature"])).items()}
        desired = await twins.write_property(twin_id, "target", "20")
        action = await twins.invoke_action(twin_id, "reboot")
        request = pb.WatchRequest(twin_ids=[twin_id], include_current_state=True)
        async for response in twins.watch(request, TIMEOUT_S):
            if response.changes:
                break
        await twins.delete_thing(twin_id)
        return thing.twin_id, listed, values, desired.version, action.name, response.changes[0].twin_id

    twin = run_with(server, scenario)
    assert (twin[0], [twin[0]], {"temperature": "21.5"}, 1, "reboot", twin[0]) == twin
