"""Reloading the peer link credentials: new calls use the new files, calls in flight are not failed."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Pki
from tests.security.fleet import (
    DISPATCHER,
    HUB,
    TIMEOUT_S,
    certificate_files,
    message_bytes,
    secured_settings,
    tls_channel,
    write_policy,
)
from tests.servers import Servers, ServerThread
from utwin.federation.forwarding import Forwarding
from utwin.federation.peer import CallOutcome
from utwin.federation.peer_client import PeerClient
from utwin.service.security import ServerSecurity
from utwin_proto.uprotocol.v1 import uri_pb2

SET = "/uprotocol.core.utwin.v2.uTwin/SetLastMessage"
TOPIC = uri_pb2.UUri(authority_name="vehicle-a", ue_id=1, ue_version_major=1, resource_id=0x8001)
# As the hub forwards a client's request.
FORWARDED = Forwarding(1, frozenset({"hub"}))
POLL_DEADLINE_S = 20.0


class Fleet:
    """vehicle-a, which trusts the client CA in `vehicle_ca`, and the hub asking it over mTLS."""

    def __init__(self, servers: Servers, folder: Path, fleet: Pki) -> None:
        policy = write_policy(folder)
        self.vehicle_ca = folder / "vehicle-client-ca.pem"
        shutil.copy(fleet.path("ca.pem"), self.vehicle_ca)
        self._servers = servers
        self._vehicle_settings = secured_settings(
            fleet, policy, mtls=True, tls_client_ca=str(self.vehicle_ca)
        )
        self.vehicle = servers.start("vehicle-a", authority="vehicle-a", **self._vehicle_settings)
        with tls_channel(
            self.vehicle.target, fleet.path("ca.pem"), certificate_files(fleet, DISPATCHER)
        ) as channel:
            channel.unary_unary(SET)(message_bytes("up://vehicle-a/1/1/8001", '"21.5"'), timeout=TIMEOUT_S)
        self.peer_cert, self.peer_key = folder / "hub-peer.pem", folder / "hub-peer.key"
        self.show(certificate_files(fleet, HUB))
        peer_settings: dict[str, Any] = {
            "peer_tls_ca": str(fleet.path("ca.pem")),
            "peer_tls_cert": str(self.peer_cert),
            "peer_tls_key": str(self.peer_key),
            "peers": {"vehicle-a": self.vehicle.target},
        }
        self.hub = servers.start(
            "hub", authority="hub", **secured_settings(fleet, policy, mtls=True, **peer_settings)
        )
        self.hub_security = _security(self.hub)
        (link,) = self.hub_security.peer_links
        assert isinstance(link, PeerClient)
        self.client = link

    def show(self, identity: tuple[Path, Path]) -> None:
        """Rewrite the files of the certificate the hub shows vehicle-a."""
        shutil.copy(identity[0], self.peer_cert)
        shutil.copy(identity[1], self.peer_key)

    def restart_vehicle(self) -> None:
        """Stop vehicle-a and start it again on its port: every connection to it is made anew."""
        port = self.vehicle.port
        self.vehicle.stop()
        self.vehicle = self._servers.start(
            "vehicle-a", authority="vehicle-a", listen=f"127.0.0.1:{port}", **self._vehicle_settings
        )

    def ask_until_answered(self) -> str:
        """Ask until vehicle-a answers (the hub reconnects with a backoff), at most POLL_DEADLINE_S."""
        deadline = time.monotonic() + POLL_DEADLINE_S
        outcome = self.ask()
        while outcome != "OK with message" and time.monotonic() < deadline:
            time.sleep(0.05)
            outcome = self.ask()
        return outcome

    def ask(self) -> str:
        """One lookup of vehicle-a's topic over the hub's peer client: its payload or its error."""
        return _outcome(self.hub.call(_lookup(self.client)))


def _security(server: ServerThread) -> ServerSecurity:
    security = server.running.security if server.running is not None else None
    assert security is not None
    return security


def _outcome(outcome: CallOutcome) -> str:
    if isinstance(outcome, Exception):
        return type(outcome).__name__
    (answer,) = outcome
    return f"{answer.code.name}" if answer.message is None else "OK with message"


async def _lookup(client: PeerClient) -> CallOutcome:
    done: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
    client.start([TOPIC], TIMEOUT_S, FORWARDED, done.set_result)
    return await done


async def _lookup_across_reload(
    client: PeerClient, security: ServerSecurity
) -> tuple[CallOutcome, list[str]]:
    """A lookup started on the old channel, then the reload before it is answered."""
    done: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
    client.start([TOPIC], TIMEOUT_S, FORWARDED, done.set_result)
    kept = security.reload()
    return await done, kept


async def _reload(security: ServerSecurity) -> list[str]:
    """A reload as the SIGHUP handler runs it: on the server's event loop."""
    return security.reload()


def _poll_closed(fleet: Fleet) -> bool:
    deadline = time.monotonic() + POLL_DEADLINE_S
    while fleet.client.retiring:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def fleet(servers: Servers, tmp_path: Path, fleet_pki: Pki) -> Fleet:
    return Fleet(servers, tmp_path, fleet_pki)


def test_reload_moves_peer_calls_to_a_new_ca_without_failing_the_call_in_flight(
    fleet: Fleet, fleet_pki: Pki, rogue_pki: Pki
) -> None:
    """vehicle-a trusts only the new CA: the hub's lookup across its reload and those after succeed."""
    before = fleet.ask()
    shutil.copy(rogue_pki.path("ca.pem"), fleet.vehicle_ca)
    vehicle_kept = fleet.vehicle.call(_reload(_security(fleet.vehicle)))
    fleet.show(certificate_files(rogue_pki, HUB))

    in_flight, hub_kept = fleet.hub.call(_lookup_across_reload(fleet.client, fleet.hub_security))
    old_channel_closed = _poll_closed(fleet)
    fleet.restart_vehicle()
    after = [fleet.ask_until_answered(), fleet.ask(), fleet.ask()]

    assert ("OK with message", [], "OK with message", [], True, ["OK with message"] * 3) == (
        before,
        vehicle_kept,
        _outcome(in_flight),
        hub_kept,
        old_channel_closed,
        after,
    )


def test_without_a_reload_the_new_ca_is_refused(fleet: Fleet, rogue_pki: Pki) -> None:
    """The control: new connections to a vehicle that trusts only the new CA fail with the old files."""
    shutil.copy(rogue_pki.path("ca.pem"), fleet.vehicle_ca)
    fleet.vehicle.call(_reload(_security(fleet.vehicle)))
    fleet.hub.call(_rotate_without_new_files(fleet))
    assert "Unavailable" == fleet.ask()


async def _rotate_without_new_files(fleet: Fleet) -> None:
    """A new channel with the credentials in force, as a reload of unchanged files would make."""
    fleet.client.use_credentials(fleet.hub_security.peer_credentials)


def test_reload_with_a_broken_peer_file_keeps_the_credentials_in_force(fleet: Fleet) -> None:
    """A peer certificate file that does not load is reported and the hub goes on asking with the old one."""
    fleet.peer_cert.write_text("not a certificate")
    kept = fleet.hub.call(_reload(fleet.hub_security))
    fleet.peer_key.write_text("not a key either")
    kept_again = fleet.hub.call(_reload(fleet.hub_security))
    assert (["peer_tls_cert: not a PEM certificate"], ["peer_tls_cert: not a PEM certificate"], 0) == (
        kept,
        kept_again,
        fleet.client.retiring,
    ) and "OK with message" == fleet.ask()
