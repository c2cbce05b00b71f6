"""Packaging and deployment: wheel and sdist contents, the systemd unit, the container image, its probe."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.processes import child_environment
from tests.servers import ServerThread
from utwin.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROTOS = sorted(path.relative_to(ROOT / "proto").as_posix() for path in (ROOT / "proto").rglob("*.proto"))
BUILD_TIMEOUT_S = 120
# What a build needs; copied so that building leaves nothing in the source tree.
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "src", "generated", "proto")


def _build_tree(folder: Path) -> Path:
    tree = folder / "tree"
    tree.mkdir()
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, tree / name)
    return tree


def test_wheel_and_sdist_ship_the_protos_licence_and_type_markers(tmp_path: Path) -> None:
    """The wheel holds every .proto under utwin_proto/, py.typed and LICENSE; the sdist holds proto/."""
    tree = _build_tree(tmp_path)
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        cwd=tree,
        check=True,
        timeout=BUILD_TIMEOUT_S,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"],
        cwd=tree,
        check=True,
        timeout=BUILD_TIMEOUT_S,
        capture_output=True,
    )
    (wheel,) = out.glob("utwin-*.whl")
    (sdist,) = out.glob("utwin-*.tar.gz")
    wheel_names = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing_in_wheel = [
        name
        for name in [f"utwin_proto/{proto}" for proto in PROTOS] + ["utwin/py.typed", "utwin_proto/py.typed"]
        if name not in wheel_names
    ]
    assert [] == missing_in_wheel
    assert any(re.fullmatch(r"utwin-[^/]+\.dist-info/licenses/LICENSE", name) for name in wheel_names)
    assert [] == [proto for proto in PROTOS if f"proto/{proto}" not in sdist_names]
    assert [] == [proto for proto in PROTOS if f"generated/utwin_proto/{proto}" not in sdist_names]


def _directives(unit_text: str) -> dict[str, list[str]]:
    """KEY -> values of a unit file (a key may repeat), ignoring sections and comments."""
    directives: dict[str, list[str]] = {}
    for line in unit_text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_unit_runs_utwin_serve_with_a_config_file_hardened() -> None:
    """The unit runs `utwin serve --config`, unprivileged, in its state folder, drains within its timeout."""
    unit = _directives((DEPLOY / "utwin.service").read_text())
    settings = load_config(DEPLOY / "utwin.toml")
    (exec_start,) = unit["ExecStart"]
    assert re.fullmatch(
        r"/\S+/utwin serve --config /etc/utwin/utwin\.toml --data-dir /var/lib/utwin", exec_start
    )
    assert Path("/var/lib/utwin") == settings.data_dir
    assert ["yes"] == unit["DynamicUser"] and "User" not in unit
    assert (["utwin"], ["strict"], ["yes"]) == (
        unit["StateDirectory"],
        unit["ProtectSystem"],
        unit["NoNewPrivileges"],
    )
    assert (["on-failure"], ["SIGTERM"]) == (unit["Restart"], unit["KillSignal"])
    assert float(unit["TimeoutStopSec"][0]) > settings.shutdown_grace_s + 10  # the store closes after


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a warning (its utwin path pointed at this one)."""
    utwin = Path(sys.executable).parent / "utwin"
    unit = tmp_path / "utwin.service"
    unit.write_text((DEPLOY / "utwin.service").read_text().replace("/opt/utwin/bin/utwin", str(utwin)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (0, "") == (verified.returncode, verified.stderr + verified.stdout)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_runs_unprivileged_with_a_data_volume_and_a_grpc_health_check() -> None:
    """The final image: slim base, a non-root user, the data folder a volume, a health check, utwin serve."""
    instructions = _dockerfile_instructions()
    last_from = max(index for index, (name, _) in enumerate(instructions) if name == "FROM")
    final = instructions[last_from:]
    values = {name: arguments for name, arguments in final}
    settings = load_config(DEPLOY / "utwin.toml")
    assert re.fullmatch(r"python:3\.\d+-slim", values["FROM"])
    assert values["USER"].split(":")[0] not in ("root", "0")
    assert f'["{settings.data_dir}"]' == values["VOLUME"]
    assert re.fullmatch(r'--interval=\S+ .*CMD \["utwin", "health", .*\]', values["HEALTHCHECK"])
    assert ('["utwin"]', '["serve"]') == (values["ENTRYPOINT"], values["CMD"])
    assert "UTWIN_CONFIG=/etc/utwin/utwin.toml" in values["ENV"]


def _health_check_command() -> list[str]:
    """The image's HEALTHCHECK command, its `utwin` run from this environment."""
    (health_check,) = [arguments for name, arguments in _dockerfile_instructions() if name == "HEALTHCHECK"]
    command: list[str] = json.loads(health_check.split("CMD", 1)[1])
    assert "utwin" == command[0]
    return [sys.executable, "-m", "utwin", *command[1:]]


def _health_check(target: str) -> int:
    environment = child_environment({"UTWIN_TARGET": target})
    return subprocess.run(
        _health_check_command(), capture_output=True, env=environment, timeout=60, check=False
    ).returncode


def test_image_health_check_passes_for_a_serving_server_only(server: ServerThread) -> None:
    """The image's health check command exits 0 against a SERVING server and not 0 when nothing answers."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    assert (0, 4) == (_health_check(server.target), _health_check(f"127.0.0.1:{closed_port}"))


@pytest.mark.skipif(
    os.environ.get("UTWIN_TEST_CONTAINER") != "1",
    reason="builds and runs the image: set UTWIN_TEST_CONTAINER=1 where a container engine runs",
)
def test_image_serves_and_reports_healthy(tmp_path: Path) -> None:
    """The built image starts (insecure trial settings), and its own health check turns healthy."""
    engine = shutil.which("docker") or shutil.which("podman")
    assert engine is not None
    tag = "utwin-test:latest"
    subprocess.run([engine, "build", "-t", tag, str(ROOT)], check=True, timeout=900)
    name = f"utwin-test-{os.getpid()}"
    subprocess.run(
        [engine, "run", "-d", "--name", name, "-e", "UTWIN_ALLOW_INSECURE=true", tag], check=True, timeout=60
    )
    try:
        inspect = [engine, "inspect", "--format", "{{.State.Health.Status}}", name]
        deadline = time.monotonic() + 90  # the start period is 30 s, checks every 10 s
        status = ""
        while status != "healthy" and time.monotonic() < deadline:
            status = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()
            time.sleep(1)  # between polls of the engine, under the deadline
        assert "healthy" == status
    finally:
        subprocess.run([engine, "rm", "-f", name], check=False, timeout=60)
