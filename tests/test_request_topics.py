"""The topics of a GetLastMessagesRequest, cut from its bytes, are the ones re-encoding gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.messages import encode_varint, uuri
from utwin.service.wire import RequestTopics
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import uri_pb2


def _length_delimited(field: int, payload: bytes) -> bytes:
    return encode_varint(field << 3 | 2) + encode_varint(len(payload)) + payload


def encode_uuri(uri: uri_pb2.UUri, order: list[int], defaults: bool) -> bytes:
    """A UUri encoded by hand: fields in the given order, zero values written out if asked."""
    fields = {
        1: _length_delimited(1, uri.authority_name.encode()) if uri.authority_name or defaults else b"",
        2: encode_varint(2 << 3) + encode_varint(uri.ue_id) if uri.ue_id or defaults else b"",
        3: encode_varint(3 << 3) + encode_varint(uri.ue_version_major)
        if uri.ue_version_major or defaults
        else b"",
        4: encode_varint(4 << 3) + encode_varint(uri.resource_id) if uri.resource_id or defaults else b"",
    }
    return b"".join(fields[number] for number in order)


uris = st.builds(
    uuri,
    st.sampled_from(["", "vin", "vcu.my_vin"]),
    st.sampled_from([0, 1, 0x01A40101]),
    st.sampled_from([0, 1, 0xFF]),
    st.sampled_from([0, 0x8000, 0xFFFE]),
)
encodings = st.tuples(st.permutations([1, 2, 3, 4]), st.booleans())


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """GetLastMessagesRequest bytes, some encoded as the generated classes never would."""
    topics = [
        encode_uuri(uri, *draw(st.sampled_from([([1, 2, 3, 4], False)]) | encodings))
        for uri in draw(st.lists(uris, min_size=1, max_size=6))
    ]
    split = draw(st.integers(0, len(topics)))  # the batch field twice: the batches merge
    batches = [topics[:split], topics[split:]] if draw(st.booleans()) else [topics]
    return b"".join(
        _length_delimited(1, b"".join(_length_delimited(1, topic) for topic in batch)) for batch in batches
    )


@settings(max_examples=200, derandomize=True, deadline=None)
@given(requests())
def test_topics_are_the_re_encoded_uuris(raw_request: bytes) -> None:
    """Each topic is what UUri.SerializeToString gives for the parsed request, asked once or again."""
    parsed = utwin_pb2.GetLastMessagesRequest.FromString(raw_request).topics.uris
    expected = [uri.SerializeToString() for uri in parsed]
    request_topics = RequestTopics()
    assert [expected, expected] == [request_topics.of(raw_request, parsed) for _ in range(2)]


def test_memory_of_topics_is_bounded() -> None:
    """Past its bound the memory starts over and answers stay right."""
    request_topics = RequestTopics(limit=2)
    for resource in range(0x8000, 0x8005):
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend([uuri(resource=resource), uuri(resource=resource + 0x100)])
        assert [uri.SerializeToString() for uri in request.topics.uris] == request_topics.of(
            request.SerializeToString(), request.topics.uris
        )
    assert len(request_topics._canonical) <= 2
