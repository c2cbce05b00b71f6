"""The Prometheus endpoint: figures that move with the calls a real server answers."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.digitwin.agents import action_td, invoke
from tests.digitwin.helpers import register, subscribed_stream
from tests.messages import publish, uuri
from tests.servers import Servers, ServerThread
from utwin.config import check_secure_start, load_config
from utwin.errors import InvalidArgument, Unavailable
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2 as pb
from utwin_proto.utwin.digitwin.v1 import digitwin_pb2_grpc as pb_grpc
from utwin_proto.utwin.v1 import ingest_pb2, ingest_pb2_grpc, watch_pb2, watch_pb2_grpc

TIMEOUT_S = 10.0
UTWIN = "uprotocol.core.utwin.v2.uTwin"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def server(servers: Servers) -> ServerThread:
    return servers.start(metrics_listen="127.0.0.1:0")


@pytest.fixture
def stub(server: ServerThread) -> Iterator[utwin_pb2_grpc.uTwinStub]:
    with server.channel() as channel:
        yield utwin_pb2_grpc.uTwinStub(channel)


def _scrape_text(server: ServerThread) -> str:
    assert server.running is not None and server.running.metrics_endpoint is not None
    url = f"http://127.0.0.1:{server.running.metrics_endpoint.port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return str(response.read().decode())


def _scrape(server: ServerThread) -> Samples:
    """Every sample of the server's /metrics, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(_scrape_text(server))
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _get(stub: utwin_pb2_grpc.uTwinStub, count: int) -> None:
    request = utwin_pb2.GetLastMessagesRequest()
    request.topics.uris.extend(uuri(resource=0x8000 + n) for n in range(count))
    stub.GetLastMessages(request, timeout=TIMEOUT_S)


def test_calls_are_counted_by_method_and_status(server: ServerThread, stub: utwin_pb2_grpc.uTwinStub) -> None:
    """Each answered call adds one to its method and final status, and to its duration histogram."""
    stub.SetLastMessage(publish(), timeout=TIMEOUT_S)
    _get(stub, 1)
    _get(stub, 1)
    with pytest.raises(grpc.RpcError) as refused:
        _get(stub, 0)  # an empty batch: the whole call is refused
    assert grpc.StatusCode.INVALID_ARGUMENT == refused.value.code()

    samples = _scrape(server)

    get_ok = {"service": UTWIN, "method": "GetLastMessages", "code": "OK"}
    assert 2 == _value(samples, "utwin_rpc_handled_total", **get_ok)
    assert 2 == _value(samples, "utwin_rpc_duration_seconds_count", **get_ok)
    assert 2 == _value(samples, "utwin_rpc_duration_seconds_bucket", **get_ok, le="+Inf")
    assert 0 < _value(samples, "utwin_rpc_duration_seconds_sum", **get_ok)
    refused_labels = {"service": UTWIN, "method": "GetLastMessages", "code": "INVALID_ARGUMENT"}
    assert 1 == _value(samples, "utwin_rpc_handled_total", **refused_labels)
    assert 1 == _value(samples, "utwin_rpc_handled_total", service=UTWIN, method="SetLastMessage", code="OK")


def test_set_answers_are_counted_by_ustatus(server: ServerThread, stub: utwin_pb2_grpc.uTwinStub) -> None:
    """SetLastMessage answers count by their UStatus code, though the gRPC status is OK for all."""
    stub.SetLastMessage(publish(), timeout=TIMEOUT_S)
    stub.SetLastMessage(publish(uuri(resource=0x8001)), timeout=TIMEOUT_S)
    stub.SetLastMessage(publish(uuri(resource=0x0001)), timeout=TIMEOUT_S)  # not a topic

    samples = _scrape(server)

    assert 2 == _value(samples, "utwin_set_last_message_answers_total", ustatus="OK")
    assert 1 == _value(samples, "utwin_set_last_message_answers_total", ustatus="INVALID_ARGUMENT")
    assert 3 == _value(samples, "utwin_rpc_handled_total", service=UTWIN, method="SetLastMessage", code="OK")
    assert 2 <= _value(samples, "utwin_store_write_seconds_count", via="set")


def test_ingest_counts_frames_messages_and_rejections(server: ServerThread) -> None:
    """An ingest stream counts its frames, its messages and each rejection by code."""
    frames = [
        [publish(uuri(resource=0x8000 + n)) for n in range(3)],
        [publish(uuri(resource=0x8010)), publish(uuri(resource=0x0002))],  # the second is no topic
    ]
    with server.channel() as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        requests = (ingest_pb2.PublishRequest(messages=frame) for frame in frames)
        acks = list(stub.Publish(requests, timeout=TIMEOUT_S))
    assert 5 == acks[-1].acknowledged

    samples = _scrape(server)

    assert 2 == _value(samples, "utwin_ingest_frames_total")
    assert 5 == _value(samples, "utwin_ingest_messages_total")
    assert 1 == _value(samples, "utwin_ingest_rejections_total", code="INVALID_ARGUMENT")
    assert 1 <= _value(samples, "utwin_store_write_seconds_count", via="ingest")
    publish_ok = {"service": "utwin.v1.Ingest", "method": "Publish", "code": "OK"}
    assert 1 == _value(samples, "utwin_rpc_handled_total", **publish_ok)


def test_store_figures_follow_the_topics(server: ServerThread, stub: utwin_pb2_grpc.uTwinStub) -> None:
    """The topic gauge counts stored topics; value memory and RocksDB figures are read at scrape."""
    assert 0 == _value(_scrape(server), "utwin_store_topics")
    for resource in (0x8000, 0x8001, 0x8002):
        stub.SetLastMessage(publish(uuri(resource=resource)), timeout=TIMEOUT_S)
    _get(stub, 3)

    samples = _scrape(server)

    assert 3 == _value(samples, "utwin_store_topics")
    assert 0 < _value(samples, "utwin_value_memory_bytes")
    assert 3 <= _value(samples, "utwin_value_memory_lookups_total")
    assert 0 < _value(samples, "utwin_rocksdb_memory_bytes", kind="memtables")
    assert ("utwin_rocksdb_size_bytes", frozenset({("kind", "live_data")})) in samples
    assert 0 < _value(samples, "process_resident_memory_bytes")


def test_fsyncs_are_timed_with_durability_power(servers: Servers) -> None:
    """With durability power each group fsync lands in the fsync histogram."""
    server = servers.start(metrics_listen="127.0.0.1:0", durability="power")
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        stub.SetLastMessage(publish(), timeout=TIMEOUT_S)

    assert 1 <= _value(_scrape(server), "utwin_store_fsync_seconds_count")


def test_peer_failures_and_breaker_state_per_peer(servers: Servers) -> None:
    """A peer that cannot be reached counts its calls and failures, and its breaker is a gauge."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]  # closed again before the call: nothing listens
    server = servers.start(
        metrics_listen="127.0.0.1:0", authority="A", peers=f"B=127.0.0.1:{dead_port}", breaker_failures=1
    )
    with server.channel() as channel:
        stub = utwin_pb2_grpc.uTwinStub(channel)
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.append(uuri(authority="B"))
        stub.GetLastMessages(request, timeout=TIMEOUT_S)

    samples = _scrape(server)

    assert 1 <= _value(samples, "utwin_peer_calls_total", peer="B")
    assert 1 <= _value(samples, "utwin_peer_failures_total", peer="B")
    assert 2 == _value(samples, "utwin_peer_breaker_state", peer="B")  # open after one failure


def test_readme_lists_every_metric(servers: Servers) -> None:
    """The README's Metrics table names exactly the utwin_ metrics a server with peers serves."""
    server = servers.start(metrics_listen="127.0.0.1:0", authority="A", peers="B=127.0.0.1:9")
    served_families = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(_scrape_text(server))
        if family.name.startswith("utwin_")
    }
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = re.split(r"\n#{2,3} ", readme.split("\n### Metrics\n", 1)[1], maxsplit=1)[0]
    listed = set(re.findall(r"`(utwin_[a-z_0-9]+)`", section))

    assert [] == sorted(served_families ^ listed)


def test_watch_subscribers_and_loaded_twins(server: ServerThread) -> None:
    """An open Watch stream is a subscriber with a buffer; a registered twin is loaded."""
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        twin_id = register(stub)
        stream = subscribed_stream(stub, pb.WatchRequest(twin_ids=[twin_id]))
        samples = _scrape(server)
        stream.cancel()  # type: ignore[attr-defined]

    assert 1 == _value(samples, "utwin_digitwin_watch_subscribers")
    assert 1 == _value(samples, "utwin_digitwin_twins_loaded")
    assert ("utwin_digitwin_watch_buffered_changes", frozenset()) in samples
    assert ("utwin_digitwin_watch_buffer_fullest_ratio", frozenset()) in samples


def test_actions_by_state(server: ServerThread) -> None:
    """Actions are counted in each state they enter: two queued, one of them cancelled."""
    with server.channel() as channel:
        stub = pb_grpc.DigiTwinStub(channel)
        twin_id = register(stub, action_td("urn:dev:metrics-actions"))
        before = _scrape(server)
        cancelled = invoke(stub, twin_id, "reboot")
        invoke(stub, twin_id, "setTarget", {"target": 1})
        stub.CancelAction(pb.CancelActionRequest(action_id=cancelled.action_id), timeout=TIMEOUT_S)
        after = _scrape(server)

    assert (2, 1, 0) == tuple(
        _value(after, "utwin_digitwin_actions_total", state=state)
        - _value(before, "utwin_digitwin_actions_total", state=state)
        for state in ("pending", "cancelled", "delivered")
    )


def test_topic_watch_subscribers(server: ServerThread) -> None:
    """An open topic watch (utwin.v1.Watch/Topics) is a subscriber with a buffer."""
    with server.channel() as channel:
        stream = watch_pb2_grpc.WatchStub(channel).Topics(
            watch_pb2.TopicFilter(pattern=uuri("*", 0xFFFFFFFF, 0xFF, 0xFFFF)), timeout=TIMEOUT_S
        )
        for response in stream:  # bounded by the stream's deadline
            if response.caught_up:
                break
        samples = _scrape(server)
        stream.cancel()

    assert 1 == _value(samples, "utwin_topic_watch_subscribers")
    assert 0 == _value(samples, "utwin_topic_watch_buffered_changes")
    assert ("utwin_topic_watch_buffer_fullest_ratio", frozenset()) in samples


def _metrics_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if "serve_forever" in thread.name]


def test_metrics_off_start_no_thread_and_no_port(servers: Servers) -> None:
    """Without metrics_listen the server keeps no figures: no endpoint, no HTTP thread, an ungated clock."""
    before = _metrics_threads()
    server = servers.start()
    assert server.running is not None
    assert server.running.metrics_endpoint is None
    assert server.running.gate.metrics is None
    assert before == _metrics_threads()


def test_stop_releases_the_metrics_port(servers: Servers) -> None:
    """Stopping the server stops its HTTP thread and closes the port."""
    server = servers.start(metrics_listen="127.0.0.1:0")
    assert server.running is not None and server.running.metrics_endpoint is not None
    endpoint = server.running.metrics_endpoint
    server.stop()

    assert not endpoint.thread.is_alive()
    deadline = time.monotonic() + TIMEOUT_S
    with pytest.raises(urllib.error.URLError):
        while time.monotonic() < deadline:  # bounded: the port is closed at once
            urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=1.0).close()


def test_metrics_port_in_use_stops_the_start(servers: Servers, tmp_path: Path) -> None:
    """A metrics port already taken stops the start naming metrics_listen, and frees the store."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(Unavailable, match=f"metrics_listen: cannot bind {address}"):
            ServerThread.start(tmp_path / "node", metrics_listen=address)

    servers.start(data_dir=tmp_path / "node")  # the folder's lock was released


def test_metrics_listen_is_validated_like_listen() -> None:
    """A bad metrics_listen stops the start naming the setting; empty leaves metrics off."""
    with pytest.raises(InvalidArgument, match="metrics_listen"):
        load_config(env={"UTWIN_METRICS_LISTEN": "127.0.0.1:99999"})
    assert "" == load_config(env={}).metrics_listen
    assert "127.0.0.1:9100" == load_config(flags={"metrics_listen": "127.0.0.1:9100"}).metrics_listen


def test_metrics_beyond_loopback_need_allow_insecure() -> None:
    """A metrics address beyond loopback is refused unless allow_insecure says so."""
    config = load_config(flags={"metrics_listen": "0.0.0.0:9100"})
    with pytest.raises(InvalidArgument, match=r"metrics_listen 0\.0\.0\.0:9100 is not loopback"):
        check_secure_start(config)
    check_secure_start(load_config(flags={"metrics_listen": "0.0.0.0:9100", "allow_insecure": "true"}))
