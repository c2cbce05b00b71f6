"""The DigiTwin servicer's cache of framed Watch changes is bounded by bytes."""

from __future__ import annotations

from utwin.digitwin import Change, ChangeKind
from utwin.digitwin.ids import twin_id
from utwin.service.digitwin_servicer import FramedChanges
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb


def _td_change(number: int, td_bytes: int) -> Change:
    twin = twin_id("agent", f"urn:dev:{number}")
    return Change(ChangeKind.TD_UPDATED, twin, twin.text, td_json="x" * td_bytes)


def test_large_changes_keep_the_cache_under_its_byte_bound() -> None:
    """Framing many 1 MiB TD changes keeps at most max_bytes of framings, however many changes."""
    framed = FramedChanges(max_bytes=4 << 20)
    for number in range(40):
        framed(_td_change(number, 1 << 20))
    assert (True, True) == (framed.kept_bytes <= 4 << 20, framed.kept_bytes >= 3 << 20)


def test_framing_is_a_watch_response_field_and_reused() -> None:
    """A change is framed as WatchResponse.changes, and framing it again returns the kept bytes."""
    framed = FramedChanges()
    change = _td_change(1, 10)
    first = framed(change)
    response = pb.WatchResponse.FromString(first)
    assert (1, "x" * 10, True) == (
        len(response.changes),
        response.changes[0].td_json,
        framed(change) is first,
    )


def test_framing_larger_than_the_bound_is_not_kept() -> None:
    """A change whose framing exceeds the whole bound is framed but not kept."""
    framed = FramedChanges(max_bytes=1 << 10)
    framed(_td_change(1, 4 << 10))
    assert 0 == framed.kept_bytes
