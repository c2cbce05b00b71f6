"""Online backups (Admin/Backup, `utwin backup`), restores (`utwin restore`) and the on-disk format."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.messages import publish, uuri
from tests.servers import Servers
from utwin.cli import main
from utwin.errors import StoreError
from utwin.store import RocksEngine, RocksStore, keys
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2, utwin_pb2_grpc
from utwin_proto.uprotocol.v1 import ucode_pb2, umessage_pb2, uri_pb2
from utwin_proto.utwin.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2

TIMEOUT_S = 30.0
MESSAGES = 6_000
PER_FRAME = 100


def served(channel: grpc.Channel, topics: list[uri_pb2.UUri]) -> list[bytes | None]:
    stub = utwin_pb2_grpc.uTwinStub(channel)
    answers: list[bytes | None] = []
    for start in range(0, len(topics), 1_000):
        request = utwin_pb2.GetLastMessagesRequest()
        request.topics.uris.extend(topics[start : start + 1_000])
        for entry in stub.GetLastMessages(request, timeout=TIMEOUT_S).responses:
            answers.append(entry.message.SerializeToString() if entry.status.code == ucode_pb2.OK else None)
    return answers


def paced_frames(messages: list[umessage_pb2.UMessage], acknowledged: list[int]) -> Iterator[bytes]:
    """Frames of PER_FRAME messages, each sent once the one before is acknowledged (bounded waits)."""
    for start in range(0, len(messages), PER_FRAME):
        yield ingest_pb2.PublishRequest(messages=messages[start : start + PER_FRAME]).SerializeToString()
        for _ in range(int(TIMEOUT_S / 0.002)):
            if acknowledged and acknowledged[-1] >= start + PER_FRAME:
                break
            time.sleep(0.002)


def test_a_backup_under_load_restores_everything_acknowledged_before_it_began(
    servers: Servers, tmp_path: Path
) -> None:
    """While a stream writes, a backup is taken; a server on its restore serves all acknowledged before."""
    topics = [uuri(authority=f"car{n % 60}", resource=0x8000 + n % 4000) for n in range(MESSAGES)]
    messages = [publish(topic, b"m%d" % n) for n, topic in enumerate(topics)]
    server = servers.start("live", backup_dir=tmp_path / "backups")
    acknowledged: list[int] = []
    with server.channel() as channel:
        publish_call = channel.stream_stream("/utwin.v1.Ingest/Publish")
        acks = publish_call(paced_frames(messages, acknowledged), timeout=TIMEOUT_S)

        def read_acks() -> None:
            for raw in acks:
                acknowledged.append(ingest_pb2.PublishAck.FromString(raw).acknowledged)

        reader = threading.Thread(target=read_acks)
        reader.start()
        try:
            for _ in range(600):  # until about a third is acknowledged (bounded)
                if acknowledged and acknowledged[-1] >= MESSAGES // 3:
                    break
                time.sleep(0.01)
            before = acknowledged[-1]
            path = (
                admin_pb2_grpc.AdminStub(channel)
                .Backup(admin_pb2.BackupRequest(name="under-load"), timeout=TIMEOUT_S)
                .path
            )
        finally:
            reader.join(TIMEOUT_S)
    assert (MESSAGES, str(tmp_path / "backups" / "under-load")) == (acknowledged[-1], path)
    assert 0 == main(["restore", path, str(tmp_path / "restored")])
    restored = servers.start("restored", data_dir=tmp_path / "restored")
    newest_before = {
        topic.SerializeToString(): m for topic, m in zip(topics[:before], messages[:before], strict=True)
    }
    with restored.channel() as channel:
        answers = dict(zip((t.SerializeToString() for t in topics), served(channel, topics), strict=True))
    missing = [key for key, message in newest_before.items() if answers[key] is None]
    older = [
        key
        for key, message in newest_before.items()
        if answers[key] is not None
        and umessage_pb2.UMessage.FromString(answers[key]).attributes.id.msb < message.attributes.id.msb
    ]
    assert ([], []) == (missing, older)


@pytest.mark.parametrize(
    ("settings", "name", "code", "field"),
    [
        ({}, "b1", grpc.StatusCode.FAILED_PRECONDITION, "backup_dir"),
        ({"backup_dir": "BACKUPS"}, "../escape", grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"backup_dir": "BACKUPS"}, "taken", grpc.StatusCode.FAILED_PRECONDITION, "name"),
    ],
)
def test_a_refused_backup_names_the_setting_or_field(
    servers: Servers, tmp_path: Path, settings: dict[str, str], name: str, code: grpc.StatusCode, field: str
) -> None:
    """No backup_dir, a name that is no folder name, or a name taken: refused naming why."""
    if "backup_dir" in settings:
        settings = {"backup_dir": str(tmp_path / "backups")}
        (tmp_path / "backups" / "taken").mkdir(parents=True)
    server = servers.start(**settings)
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        admin_pb2_grpc.AdminStub(channel).Backup(admin_pb2.BackupRequest(name=name), timeout=TIMEOUT_S)
    assert (code, True) == (raised.value.code(), raised.value.details().startswith(field))  # type: ignore[attr-defined]


def test_cli_backup_then_restore(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`utwin backup` prints the folder; `utwin restore` refuses a non-empty folder, then restores."""
    server = servers.start(backup_dir=tmp_path / "backups")
    with server.channel() as channel:
        utwin_pb2_grpc.uTwinStub(channel).SetLastMessage(publish(uuri(), b"kept"), timeout=TIMEOUT_S)
    assert 0 == main(["backup", "--target", server.target, "--json"])
    path = capsys.readouterr().out.split('"path": "')[1].split('"')[0]
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    refused = main(["restore", path, str(occupied)])
    not_a_backup = main(["restore", str(occupied), str(tmp_path / "fresh")])
    err = capsys.readouterr().err
    assert (2, 2, 0) == (refused, not_a_backup, main(["restore", path, str(tmp_path / "fresh")]))
    assert "not empty" in err and "not a utwin backup" in err
    restored = servers.start("fresh", data_dir=tmp_path / "fresh")
    with restored.channel() as channel:
        assert [publish(uuri(), b"kept").payload] == [
            umessage_pb2.UMessage.FromString(answer).payload
            for answer in served(channel, [uuri()])
            if answer is not None
        ]


def test_a_folder_of_a_newer_format_is_refused_at_open(tmp_path: Path) -> None:
    """A data folder whose format is newer than this utwin reads is refused, naming both versions."""
    engine = RocksEngine(tmp_path / "db")
    engine.write([(keys.FORMAT_KEY, keys.encode_count(keys.FORMAT_VERSION + 1))])
    engine.close()
    with pytest.raises(StoreError, match=f"on-disk format {keys.FORMAT_VERSION + 1}"):
        RocksStore(tmp_path / "db")
