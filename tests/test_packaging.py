"""The declared dependency floors admit no runtime the generated code would refuse."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated" / "utwin_proto"


def _floors() -> dict[str, tuple[int, ...]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors: dict[str, tuple[int, ...]] = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?(;.*)?", requirement.replace(" ", ""))
        if match:
            floors[match.group(1)] = tuple(int(part) for part in match.group(2).split("."))
    return floors


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_protobuf_floor_covers_generated_code() -> None:
    """protobuf's floor is at least the version the _pb2 modules were generated for."""
    header = (GENERATED / "uprotocol" / "v1" / "uri_pb2.py").read_text()
    generated_for = re.search(r"# Protobuf Python Version: ([0-9.]+)", header)
    assert generated_for is not None
    assert _floors()["protobuf"] >= _version(generated_for.group(1))


def test_grpcio_floor_covers_generated_stubs() -> None:
    """grpcio's floor is at least the version the _pb2_grpc modules require."""
    stubs = (GENERATED / "uprotocol" / "core" / "utwin" / "v2" / "utwin_pb2_grpc.py").read_text()
    required = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", stubs)
    assert required is not None
    assert _floors()["grpcio"] >= _version(required.group(1))


def test_grpc_plugins_share_the_grpcio_floor() -> None:
    """Health checking and reflection are held to the same floor as grpcio."""
    floors = _floors()
    assert floors["grpcio"] == floors["grpcio-health-checking"] == floors["grpcio-reflection"]
