"""Generated code matches proto/, carries upstream's identity, and every RPC it declares is served."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.protobuf import descriptor

import utwin_proto
from tests.servers import ServerThread
from utwin_proto.uprotocol import uoptions_pb2
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 10.0
# A server stream that stays open (Watch) is implemented: it only has to answer something else.
STREAM_TIMEOUT_S = 1.0


def _service_files() -> list[descriptor.FileDescriptor]:
    """Every generated proto file that declares a service, found by walking utwin_proto."""
    files = []
    for module_info in pkgutil.walk_packages(utwin_proto.__path__, "utwin_proto."):
        if module_info.name.endswith("_pb2"):
            file = importlib.import_module(module_info.name).DESCRIPTOR
            if file.services_by_name:
                files.append(file)
    return files


def _methods() -> list[descriptor.MethodDescriptor]:
    return [
        method
        for file in _service_files()
        for service in file.services_by_name.values()
        for method in service.methods
    ]


def _path(method: descriptor.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _identity(data: bytes) -> bytes:
    return data


def test_generated_code_matches_protos() -> None:
    """tools/gen_protos.py --check finds generated/ identical to what proto/ gives."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (0, "") == (result.returncode, result.stderr)


def test_generated_modules_live_under_the_project_name() -> None:
    """Generated modules import each other as utwin_proto, never as a top-level uprotocol."""
    offending = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "generated").rglob("*.py")
        if any(
            line.startswith(("from uprotocol", "import uprotocol")) for line in path.read_text().splitlines()
        )
    ]
    assert [] == offending


def test_descriptors_declare_the_known_methods() -> None:
    """The descriptors walked below hold every service: uTwin, Ingest, Admin, PeerLookup, DigiTwin."""
    expected = {
        "/uprotocol.core.utwin.v2.uTwin/GetLastMessages",
        "/uprotocol.core.utwin.v2.uTwin/SetLastMessage",
        "/utwin.v1.Ingest/Publish",
        "/utwin.v1.Admin/GetStats",
        "/utwin.v1.PeerLookup/Lookup",
        "/utwin.digitwin.v1.DigiTwin/Watch",
    }
    assert expected <= {_path(method) for method in _methods()}


def test_utwin_service_carries_upstream_options() -> None:
    """uTwin declares upstream's service name, version, id and method ids."""
    service = utwin_pb2.DESCRIPTOR.services_by_name["uTwin"]
    options = service.GetOptions()
    identity = (
        options.Extensions[uoptions_pb2.service_name],
        options.Extensions[uoptions_pb2.service_version_major],
        options.Extensions[uoptions_pb2.service_version_minor],
        options.Extensions[uoptions_pb2.service_id],
    )
    method_ids = {
        method.name: method.GetOptions().Extensions[uoptions_pb2.method_id] for method in service.methods
    }
    assert (("core.utwin", 2, 0, 3), {"GetLastMessages": 1, "SetLastMessage": 2}) == (identity, method_ids)


def test_get_last_messages_signature_is_upstream() -> None:
    """GetLastMessages takes GetLastMessagesRequest and returns GetLastMessagesResponse, both unary."""
    method = utwin_pb2.DESCRIPTOR.services_by_name["uTwin"].methods_by_name["GetLastMessages"]
    assert (
        "uprotocol.core.utwin.v2.GetLastMessagesRequest",
        "uprotocol.core.utwin.v2.GetLastMessagesResponse",
        False,
        False,
    ) == (
        method.input_type.full_name,
        method.output_type.full_name,
        method.client_streaming,
        method.server_streaming,
    )


def _call(channel: grpc.Channel, method: descriptor.MethodDescriptor) -> grpc.StatusCode:
    """Call method with one empty request message and return the status the call ended with."""
    path = _path(method)
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    make = kinds[(method.client_streaming, method.server_streaming)]
    callable_ = make(path, request_serializer=_identity, response_deserializer=_identity)
    request: object = iter([b""]) if method.client_streaming else b""
    try:
        timeout = STREAM_TIMEOUT_S if method.server_streaming else TIMEOUT_S
        answer = callable_(request, timeout=timeout)  # type: ignore[operator]
        if method.server_streaming:
            list(answer)
    except grpc.RpcError as error:
        return cast(grpc.Call, error).code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", _methods(), ids=_path)
def test_every_declared_rpc_is_implemented(server: ServerThread, method: descriptor.MethodDescriptor) -> None:
    """Each method of the service descriptors answers something other than UNIMPLEMENTED."""
    with server.channel() as channel:
        assert grpc.StatusCode.UNIMPLEMENTED != _call(channel, method)
