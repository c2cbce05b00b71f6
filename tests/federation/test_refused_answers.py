"""A peer's answer enters the store through the same rules as a write (see tests/test_write_paths.py)."""

from __future__ import annotations

import pytest

from tests.federation.fake_peer import FakePeer
from tests.federation.helpers import ask
from tests.messages import publish, uuri
from tests.servers import Servers
from tests.test_write_paths import REFUSED, MakeMessage
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2

F_TOPIC = uuri("F", 0x0001_0001, 1, 0x8001)


@pytest.mark.parametrize(("make", "detail"), REFUSED)
def test_peer_answer_is_neither_stored_nor_served(
    servers: Servers, fake_peer: FakePeer, make: MakeMessage, detail: str
) -> None:
    """A peer's refused message makes its topic UNAVAILABLE; the batch's other topics are answered."""
    fake_peer.put(umessage_pb2.UMessage.FromString(make(F_TOPIC)))
    good = uuri("F", 0x0001_0001, 1, 0x8002)
    fake_peer.put(publish(good, b"fine"))
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})

    answers = ask(a.target, [F_TOPIC, good])

    assert [ucode_pb2.UNAVAILABLE, ucode_pb2.OK] == [entry.status.code for entry in answers]
    assert detail in answers[0].status.message
    assert b"fine" == answers[1].message.payload


def test_refused_answer_is_not_stored(servers: Servers, fake_peer: FakePeer) -> None:
    """Once the peer fixes its message, the next read fetches it: nothing refused was kept."""
    poisoned = publish(F_TOPIC).SerializeToString() + b"\x9b\x06" * 99 + b"\x9c\x06" * 99
    fake_peer.put(umessage_pb2.UMessage.FromString(poisoned))
    a = servers.start("A", authority="A", peers={"F": fake_peer.target})
    assert ucode_pb2.UNAVAILABLE == ask(a.target, [F_TOPIC])[0].status.code
    fixed = publish(F_TOPIC, b"fixed")
    fake_peer.put(fixed)

    (answer,) = ask(a.target, [F_TOPIC])

    assert (ucode_pb2.OK, fixed) == (answer.status.code, answer.message)
