"""Fixtures of the federation tests: a fake peer uTwin on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.federation.fake_peer import FakePeer


@pytest.fixture
def fake_peer() -> Iterator[FakePeer]:
    peer = FakePeer().start()
    yield peer
    peer.close()


@pytest.fixture
def dead_peer() -> Iterator[FakePeer]:
    """A peer address on loopback where nothing listens (started once to get a free port)."""
    peer = FakePeer().start()
    peer.stop()
    yield peer
    peer.close()
