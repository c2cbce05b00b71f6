"""The uTwin client commands (`get`, `set`, `ls`, `watch`, `flush`, `backup`, `stats`, ...): wiring only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utwin import uuid
from utwin.cli_options import (
    EXIT_NOT_OK,
    EXIT_OK,
    EXIT_UNREACHABLE,
    credentials_from,
    print_until_watch_ends,
    timeout_of,
)
from utwin.cli_output import PAYLOAD_FORMATS, payload_fields, print_document, time_fields
from utwin.errors import InvalidArgument, code_of
from utwin.uri import Topic, format_uri, parse_uri

if TYPE_CHECKING:
    from utwin.client.blocking import Client
    from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
    from utwin_proto.uprotocol.v1 import umessage_pb2
    from utwin_proto.utwin.v1 import admin_pb2, watch_pb2


def answer_as_dict(response: utwin_pb2.MessageResponse) -> dict[str, Any]:
    """One GetLastMessages answer in the CLI's JSON shape."""
    topic = response.topic
    uri = format_uri(Topic(topic.authority_name, topic.ue_id, topic.ue_version_major, topic.resource_id))
    entry: dict[str, Any] = {"topic": uri, "status": code_of(response.status.code).name}
    if response.status.message:
        entry["detail"] = response.status.message
    if response.HasField("message"):
        attributes = response.message.attributes
        entry["id"] = uuid.to_text(attributes.id.msb, attributes.id.lsb)
        entry.update(time_fields("published", uuid.timestamp_ms(attributes.id.msb)))
        if attributes.HasField("ttl"):
            entry["ttl_ms"] = attributes.ttl
        entry.update(payload_fields(attributes.payload_format, response.message.payload))
    return entry


_READABLE_FIELDS = ("id", "published", "ttl_ms", "format", "payload", "payload_base64")


def _print_entry(entry: dict[str, Any]) -> None:
    head = f"{entry['topic']}  {entry['status']}"
    if "detail" in entry:
        head += f"  ({entry['detail']})"
    print(head)
    for name in _READABLE_FIELDS:
        if name in entry:
            value = entry[name]
            if name == "payload" and entry["format"] == "json":
                value = _compact_json(value)
            print(f"    {name}: {value}")


def _compact_json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _client(options: argparse.Namespace, **settings: Any) -> Client:
    from utwin.client.blocking import Client

    return Client(
        options.target, credentials=credentials_from(options), timeout_s=timeout_of(options), **settings
    )


def run_get(options: argparse.Namespace) -> int:
    topics = [parse_uri(text) for text in options.uris]
    with _client(options, max_batch_topics=options.batch) as client:
        entries = [answer_as_dict(response) for response in client.get(topics)]
    if options.json:
        print_document(entries)
    else:
        for entry in entries:
            _print_entry(entry)
    return EXIT_OK if all(entry["status"] == "OK" for entry in entries) else EXIT_NOT_OK


def read_payload(text: str) -> bytes:
    """--payload: the text itself, `-` for stdin, `@FILE` for a file's bytes."""
    if text == "-":
        return sys.stdin.buffer.read()
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_bytes()
        except OSError as error:
            raise InvalidArgument(f"--payload: cannot read {text[1:]}: {error.strerror}") from None
    return text.encode()


def run_set(options: argparse.Namespace) -> int:
    from utwin.client.requests import publish_message

    topic = parse_uri(options.uri)
    payload = read_payload(options.payload)
    message = publish_message(topic, payload, PAYLOAD_FORMATS[options.format], options.ttl)
    with _client(options) as client:
        status = client.set(message)
    result: dict[str, Any] = {
        "topic": format_uri(topic),
        "status": code_of(status.code).name,
        "id": uuid.to_text(message.attributes.id.msb, message.attributes.id.lsb),
        **time_fields("published", uuid.timestamp_ms(message.attributes.id.msb)),
    }
    if status.message:
        result["detail"] = status.message
    if options.json:
        print_document(result)
    else:
        print(f"{result['topic']}  {result['status']}  id {result['id']}", end="")
        print(f"  ({result['detail']})" if "detail" in result else "")
    return EXIT_OK if status.code == 0 else EXIT_NOT_OK


_STATS_COUNTERS = (
    "calls",
    "topics_asked",
    "hits",
    "not_found",
    "failures",
    "rejected",
    "joined",
    "remembered_not_found",
)


def _peer_as_dict(peer: admin_pb2.PeerStats) -> dict[str, Any]:
    from utwin_proto.utwin.v1 import admin_pb2

    entry: dict[str, Any] = {"authority": peer.authority, "address": peer.address}
    entry["default_route"] = peer.default_route
    entry["lookup_stream"] = peer.lookup_stream
    entry["breaker"] = admin_pb2.BreakerState.Name(peer.breaker).removeprefix("BREAKER_STATE_").lower()
    entry["consecutive_failures"] = peer.consecutive_failures
    entry.update((name, getattr(peer, name)) for name in _STATS_COUNTERS)
    return entry


def run_stats(options: argparse.Namespace) -> int:
    with _client(options) as client:
        stats = client.stats()
    peers = [_peer_as_dict(peer) for peer in stats.peers]
    taps = [{"name": tap.name, "connected": tap.connected, **_tap_counters(tap)} for tap in stats.taps]
    if options.json:
        document = {"authority": stats.authority, "topics": stats.topic_count, "peers": peers, "taps": taps}
        print_document(document)
        return EXIT_OK
    print(f"authority {stats.authority or '(none)'}  topics {stats.topic_count}  peers {len(peers)}")
    for peer in peers:
        route = "  (default route)" if peer["default_route"] else ""
        via = "lookup stream" if peer["lookup_stream"] else "GetLastMessages"
        print(f"peer {peer['authority']} at {peer['address']}{route}  via {via}  breaker {peer['breaker']}")
        print("    " + "  ".join(f"{name} {peer[name]}" for name in _STATS_COUNTERS))
    for tap in taps:
        print(f"tap {tap['name']}  {'connected' if tap['connected'] else 'not connected'}")
        print("    " + "  ".join(f"{name} {tap[name]}" for name in _TAP_COUNTERS))
    return EXIT_OK


_TAP_COUNTERS = (
    "connects",
    "received",
    "stored",
    "not_stored",
    "malformed",
    "refused",
    "dropped",
    "store_retries",
)


def _tap_counters(tap: admin_pb2.TapStats) -> dict[str, int]:
    return {name: getattr(tap, name) for name in _TAP_COUNTERS}


def message_as_dict(message: umessage_pb2.UMessage) -> dict[str, Any]:
    """A stored message in the CLI's JSON shape (the shape of `get --json`)."""
    attributes = message.attributes
    source = attributes.source
    topic = Topic(source.authority_name, source.ue_id, source.ue_version_major, source.resource_id)
    entry: dict[str, Any] = {"topic": format_uri(topic), "status": "OK"}
    entry["id"] = uuid.to_text(attributes.id.msb, attributes.id.lsb)
    entry.update(time_fields("published", uuid.timestamp_ms(attributes.id.msb)))
    if attributes.HasField("ttl"):
        entry["ttl_ms"] = attributes.ttl
    entry.update(payload_fields(attributes.payload_format, message.payload))
    return entry


def run_ls(options: argparse.Namespace) -> int:
    from utwin.cli_output import print_line

    with _client(options) as client:
        for stored in client.list_topics(options.pattern, options.page_size):
            uri = stored.topic
            topic = Topic(uri.authority_name, uri.ue_id, uri.ue_version_major, uri.resource_id)
            entry: dict[str, Any] = {
                "topic": format_uri(topic),
                "id": uuid.to_text(stored.id.msb, stored.id.lsb),
            }
            entry.update(time_fields("published", stored.published_ms))
            if options.json:
                print_line(entry)
            else:
                print(f"{entry['topic']}  id {entry['id']}  published {entry['published']}")
    return EXIT_OK


def run_watch(options: argparse.Namespace) -> int:
    from utwin.cli_output import print_line

    with _client(options) as client:
        entries = (
            entry
            for response in client.watch(options.pattern, options.timeout)
            for entry in _watch_entries(response)
        )
        return print_until_watch_ends(
            entries, options.timeout, options.count, print_line if options.json else _print_watch_entry
        )


def _watch_entries(response: watch_pb2.TopicsResponse) -> Iterator[dict[str, Any]]:
    """A watch response's entries: each message, in `get --json`'s shape, and each flushed scope."""
    for message in response.messages:
        yield message_as_dict(message)
    for scope in response.flushed:
        pattern = Topic(scope.authority_name, scope.ue_id, scope.ue_version_major, scope.resource_id)
        yield {"flushed": format_uri(pattern), **time_fields("flushed_at", response.flushed_at_ms)}


def _print_watch_entry(entry: dict[str, Any]) -> None:
    if "flushed" in entry:
        print(f"{entry['flushed']}  FLUSHED  (messages dated at or before {entry['flushed_at']} removed)")
    else:
        _print_entry(entry)


def run_flush(options: argparse.Namespace) -> int:
    if options.device is not None and options.uris:
        raise InvalidArgument("flush: give topics or --device, not both")
    if options.device is None and not options.uris:
        raise InvalidArgument("flush: give the topics to flush, or --device AUTHORITY")
    topics = [parse_uri(text) for text in options.uris]
    with _client(options) as client:
        removed = client.flush(topics, device=options.device, ue_id=options.ue)
    if options.json:
        print_document({"removed": removed})
    else:
        print(f"flushed {removed} topics")
    return EXIT_OK


def run_backup(options: argparse.Namespace) -> int:
    with _client(options) as client:
        path = client.backup(options.name)
    if options.json:
        print_document({"path": path})
    else:
        print(f"backup written to {path}")
    return EXIT_OK


def run_restore(options: argparse.Namespace) -> int:
    from utwin.service.backups import restore_backup

    restore_backup(options.backup, options.data_dir)
    print(f"restored {options.backup} into {options.data_dir}; serve it with --data-dir {options.data_dir}")
    return EXIT_OK


def _print_health(options: argparse.Namespace, status: str) -> None:
    if options.json:
        print_document({"target": options.target, "status": status})
    else:
        print(f"{options.target}  {status}")


def run_health(options: argparse.Namespace) -> int:
    from utwin.service.health_client import SERVING, check_health

    status = check_health(options.target, timeout_of(options), credentials_from(options))
    _print_health(options, status)
    return EXIT_OK if status == SERVING else EXIT_NOT_OK


def run_wait(options: argparse.Namespace) -> int:
    from utwin.client.errors import CallFailed
    from utwin.service.health_client import SERVING, wait_until_serving

    timeout_s = timeout_of(options)
    try:
        status = wait_until_serving(options.target, timeout_s, credentials_from(options))
    except CallFailed as error:
        print(
            f"utwin: {options.target} not serving after {timeout_s:g} s ({error.code.name})",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if status != SERVING:
        print(f"utwin: {options.target} not serving after {timeout_s:g} s ({status})", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not options.quiet:
        _print_health(options, status)
    return EXIT_OK
