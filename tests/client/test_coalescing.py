"""Coalescing in the AsyncClient: concurrent single-topic gets share calls, concurrent sets one stream."""

from __future__ import annotations

import asyncio

import pytest

from tests.client.conftest import INGEST, UTWIN, handled_calls
from tests.messages import publish, uuri
from tests.servers import ServerThread
from utwin.client import AsyncClient, CallFailed, Client
from utwin.errors import Code
from utwin.uri import Topic
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2

READERS = 20
TIMEOUT_S = 10.0


def topic(n: int) -> Topic:
    return Topic("vcu.my_vin", 0x1A40101, 1, 0x8000 + n)


def store_topics(server: ServerThread, count: int) -> None:
    """Store one message per topic, its payload naming the topic's number."""
    with Client(server.target, timeout_s=TIMEOUT_S) as client:
        client.ingest(publish(uuri(resource=0x8000 + n), str(n).encode()) for n in range(count))


def payload_of(answer: utwin_pb2.MessageResponse) -> bytes:
    return answer.message.payload


def gets(server: ServerThread, wanted: list[Topic], **options: object) -> list[utwin_pb2.MessageResponse]:
    async def main() -> list[utwin_pb2.MessageResponse]:
        async with AsyncClient(server.target, timeout_s=TIMEOUT_S, **options) as client:  # type: ignore[arg-type]
            return list(await asyncio.gather(*(client.get_one(t) for t in wanted)))

    return asyncio.run(main())


def test_concurrent_get_ones_share_calls_and_each_caller_gets_its_topic(counted: ServerThread) -> None:
    """21 concurrent get_ones (two of one topic) take fewer than 21 calls; each caller gets its own topic."""
    store_topics(counted, READERS)
    wanted = [topic(n) for n in range(READERS)] + [topic(3)]

    answers = gets(counted, wanted)

    assert ([str(n).encode() for n in range(READERS)] + [b"3"], True) == (
        [payload_of(answer) for answer in answers],
        handled_calls(counted, UTWIN, "GetLastMessages") < len(wanted),
    )


def test_opting_out_sends_one_call_per_get(counted: ServerThread) -> None:
    """coalesce=False: every get_one is its own GetLastMessages call."""
    store_topics(counted, 5)

    answers = gets(counted, [topic(n) for n in range(5)], coalesce=False)

    assert ([str(n).encode() for n in range(5)], 5) == (
        [payload_of(answer) for answer in answers],
        handled_calls(counted, UTWIN, "GetLastMessages"),
    )


def test_a_merged_calls_not_found_reaches_only_its_caller(counted: ServerThread) -> None:
    """One missing topic among stored ones: that caller alone gets NOT_FOUND, in one shared call."""
    store_topics(counted, 4)

    answers = gets(counted, [topic(0), topic(1), topic(99), topic(2), topic(3)])

    assert ([Code.OK, Code.OK, Code.NOT_FOUND, Code.OK, Code.OK], 1) == (
        [answer.status.code for answer in answers],
        handled_calls(counted, UTWIN, "GetLastMessages"),
    )


def test_a_batch_beyond_the_limit_is_split(counted: ServerThread) -> None:
    """Concurrent gets of more distinct topics than max_batch_topics go out in several calls."""
    store_topics(counted, 7)

    answers = gets(counted, [topic(n) for n in range(7)], max_batch_topics=3)

    assert ([str(n).encode() for n in range(7)], 3) == (
        [payload_of(answer) for answer in answers],
        handled_calls(counted, UTWIN, "GetLastMessages"),
    )


def test_a_cancelled_or_impatient_caller_leaves_the_others_answered(server: ServerThread) -> None:
    """One caller cancelled and one past its own deadline: the others of the same batch are answered."""
    store_topics(server, 5)

    async def main() -> tuple[object, ...]:
        async with AsyncClient(server.target, timeout_s=TIMEOUT_S) as client:
            tasks = [asyncio.ensure_future(client.get_one(topic(n))) for n in range(4)]
            impatient = asyncio.ensure_future(client.get_one(topic(4), timeout_s=1e-9))
            await asyncio.sleep(0)  # every caller has queued its topic
            tasks[0].cancel()
            results = await asyncio.gather(*tasks[1:], impatient, return_exceptions=True)
        return tasks[0].cancelled(), results

    cancelled, results = asyncio.run(main())
    answered, late = results[:3], results[3]  # type: ignore[index]
    assert (True, [b"1", b"2", b"3"], Code.DEADLINE_EXCEEDED) == (
        cancelled,
        [payload_of(answer) for answer in answered],
        late.code if isinstance(late, CallFailed) else late,
    )


def test_concurrent_sets_share_one_ingest_stream_and_are_stored_when_answered(counted: ServerThread) -> None:
    """Concurrent sets go through one Ingest stream, not SetLastMessage; each OK is already readable."""

    async def main() -> tuple[list[Code], list[bytes]]:
        async with (
            AsyncClient(counted.target, timeout_s=TIMEOUT_S) as client,
            AsyncClient(counted.target, coalesce=False) as reader,
        ):

            async def set_then_read(n: int) -> tuple[Code, bytes]:
                status = await client.set(publish(uuri(resource=0x8000 + n), str(n).encode()))
                return Code(status.code), payload_of(await reader.get_one(topic(n)))

            outcomes = await asyncio.gather(*(set_then_read(n) for n in range(READERS)))
        return [code for code, _ in outcomes], [payload for _, payload in outcomes]

    codes, read_back = asyncio.run(main())

    assert ([Code.OK] * READERS, [str(n).encode() for n in range(READERS)], 1, 0) == (
        codes,
        read_back,
        handled_calls(counted, INGEST, "Publish"),
        handled_calls(counted, UTWIN, "SetLastMessage"),
    )


def test_a_refused_set_gets_its_own_error(server: ServerThread) -> None:
    """Among concurrent sets on the shared stream, the refused message alone gets its rejection."""
    messages = [publish(uuri(resource=0x8000 + n)) for n in range(4)]
    messages[2] = publish(uuri(resource=0x0001))  # not a topic

    async def main() -> list[tuple[Code, str]]:
        async with AsyncClient(server.target, timeout_s=TIMEOUT_S) as client:
            statuses = await asyncio.gather(*(client.set(message) for message in messages))
        return [(Code(status.code), status.message) for status in statuses]

    outcomes = asyncio.run(main())

    assert [Code.OK, Code.OK, Code.INVALID_ARGUMENT, Code.OK] == [code for code, _ in outcomes]
    assert "resource_id" in outcomes[2][1]


@pytest.mark.parametrize("window_s", [0.0, 0.002])
def test_the_window_setting_keeps_answers_exact(counted: ServerThread, window_s: float) -> None:
    """With or without a waiting window, each of the concurrent callers gets its own topic."""
    store_topics(counted, 6)

    answers = gets(counted, [topic(n) for n in range(6)], coalesce_window_s=window_s)

    assert [str(n).encode() for n in range(6)] == [payload_of(answer) for answer in answers]
