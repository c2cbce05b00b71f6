"""Real Redis Clusters for tests: `redis-server` processes on free loopback ports, each in its folder.

A cluster is N masters, optionally one replica each, with the append-only
file on (`appendfsync` chosen per cluster) and
`cluster-require-full-coverage no`, so that a shard that is down leaves the
others serving. Every wait polls with a deadline, and `RedisCluster.stop`
(also run by the context manager on a failure) kills and reaps every process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

START_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 10.0
POLL_S = 0.02
SLOTS = 16384
NODE_TIMEOUT_MS = 1000


def redis_server_binary() -> str | None:
    """The redis-server on PATH (tools/install_servers.sh installs it), or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll condition until it holds; AssertionError naming `what` once timeout_s has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


@dataclass
class RedisNode:
    """One redis-server of a cluster: its folder, ports and process."""

    folder: Path
    port: int
    bus_port: int
    appendfsync: str
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.folder}",
                    "daemonize no",
                    "logfile redis.log",
                    'save ""',
                    "cluster-enabled yes",
                    f"cluster-port {self.bus_port}",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                    "cluster-require-full-coverage no",
                    "cluster-replica-validity-factor 0",
                    "appendonly yes",
                    "repl-diskless-sync-delay 0",  # a replica syncs at once (7.0 waits 5 s for others)
                    f"appendfsync {self.appendfsync}",
                    "",
                ]
            )
        )
        return config

    def start(self) -> None:
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not installed (bash tools/install_servers.sh)"
        self.process = subprocess.Popen(
            [binary, str(self.write_config())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=1)

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(EXIT_TIMEOUT_S)

    def cluster_info(self) -> dict[str, str]:
        with self.client() as client:
            raw = client.execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class RedisCluster:
    """A running cluster; masters[i]'s replica (if any) is replicas[i]."""

    masters: list[RedisNode]
    replicas: list[RedisNode] = field(default_factory=list)

    @property
    def nodes(self) -> list[RedisNode]:
        return self.masters + self.replicas

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.masters]

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def flush(self) -> None:
        """Remove every key (between tests sharing one cluster)."""
        for node in self.masters:
            with node.client() as client:
                client.flushall()

    def wait_ready(self, nodes: list[RedisNode] | None = None) -> None:
        """Until every node (or those given) sees the cluster state ok with every slot assigned."""
        for node in nodes or self.nodes:
            wait_for(lambda node=node: _cluster_ok(node), f"cluster state ok on port {node.port}")

    def wait_started(self) -> None:
        """Until the cluster serves every slot and every replica is in sync with its master."""
        self.wait_ready()
        for replica in self.replicas:
            wait_for(lambda replica=replica: _replica_in_sync(replica), f"replica {replica.port} in sync")

    def restart(self, node: RedisNode) -> None:
        """Start a killed node again from its folder (its nodes.conf and append-only file)."""
        node.kill()
        node.start()
        wait_for(node.answers, f"port {node.port} to answer after restart")
        self.wait_ready()

    def fail_over(self, master_index: int) -> RedisNode:
        """After masters[i] was killed: its replica takes over its slots now; the new master."""
        replica = self.replicas[master_index]
        with replica.client() as client:
            client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        wait_for(lambda: _role(replica) == "master", "the replica to become master")
        survivors = [node for node in self.nodes if node.process is not None and node.process.poll() is None]
        wait_for(
            lambda: all(_owner_of_first_slot_seen(n, replica) for n in survivors), "the new master known"
        )
        self.masters[master_index], self.replicas[master_index] = replica, self.masters[master_index]
        return replica

    def slot_owner(self, slot: int) -> RedisNode:
        """The master serving slot, as the first live master sees it."""
        observer = next(
            node for node in self.masters if node.process is not None and node.process.poll() is None
        )
        with observer.client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == int(primary[1]))
        raise AssertionError(f"slot {slot} is not assigned")

    def begin_migration(self, slot: int, target: RedisNode) -> RedisNode:
        """Mark slot importing on target and migrating on its owner (the source, returned)."""
        source = self.slot_owner(slot)
        with target.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        with source.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        return source

    def migrate_keys(self, slot: int, source: RedisNode, target: RedisNode, count: int) -> int:
        """MIGRATE up to count keys of slot from source to target; how many moved."""
        with source.client() as client:
            names = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, count)
            if names:
                client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *names)
        return len(names)

    def assign_slot(self, slot: int, target: RedisNode, node: RedisNode) -> None:
        """Tell node that target now serves slot (the last step of a move, node by node)."""
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)

    def migrate_slot(self, slot: int, target: RedisNode) -> int:
        """Move one slot to target the way redis-cli --cluster reshard does; how many keys moved."""
        source = self.begin_migration(slot, target)
        moved = 0
        for _ in range(1_000_000):
            step = self.migrate_keys(slot, source, target, 100)
            if not step:
                break
            moved += step
        for node in (target, source, *[n for n in self.masters if n not in (target, source)]):
            self.assign_slot(slot, target, node)
        return moved


def _cluster_ok(node: RedisNode) -> bool:
    try:
        info = node.cluster_info()
    except redis.RedisError:
        return False
    return info.get("cluster_state") == "ok" and info.get("cluster_slots_assigned") == str(SLOTS)


def _role(node: RedisNode) -> str:
    try:
        with node.client() as client:
            return str(client.execute_command("ROLE")[0].decode())
    except redis.RedisError:
        return ""


def _owner_of_first_slot_seen(observer: RedisNode, owner: RedisNode) -> bool:
    """Whether observer's slot map names owner as the master of some slot."""
    try:
        with observer.client() as client:
            slots = client.execute_command("CLUSTER", "SLOTS")
    except redis.RedisError:
        return False
    return any(int(primary[1]) == owner.port for _, _, primary, *_ in slots)


def start_cluster(
    folder: Path, masters: int = 3, replicas: bool = False, appendfsync: str = "always", wait: bool = True
) -> RedisCluster:
    """Start a cluster in folder and wait until it serves every slot (and replicas are in sync).

    With wait=False it returns once the nodes know each other: `RedisCluster.wait_started` then
    waits for the rest (a master serves only 2 s after its start, so clusters started together
    wait those 2 s together). A cluster whose nodes never complete their handshake (a port
    picked free and taken before its node bound it) is started once more on other ports.
    """
    try:
        return _start_cluster(folder / "first", masters, replicas, appendfsync, wait)
    except HandshakeTimeout:
        return _start_cluster(folder / "again", masters, replicas, appendfsync, wait)


class HandshakeTimeout(AssertionError):
    """The nodes of a new cluster did not all come to know each other in time."""


def _start_cluster(folder: Path, masters: int, replicas: bool, appendfsync: str, wait: bool) -> RedisCluster:
    nodes = [
        RedisNode(folder / f"node-{index}", free_port(), free_port(), appendfsync)
        for index in range(masters * (2 if replicas else 1))
    ]
    cluster = RedisCluster(nodes[:masters], nodes[masters:])
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            wait_for(node.answers, f"port {node.port} to answer")
        for node in nodes:
            with node.client() as client:
                node.node_id = client.execute_command("CLUSTER", "MYID").decode()
        share = SLOTS // masters
        for index, node in enumerate(cluster.masters):
            first, last = index * share, SLOTS - 1 if index == masters - 1 else (index + 1) * share - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with nodes[0].client() as client:
            for node in nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        try:
            wait_for(
                lambda: all(_knows_all(node, len(nodes)) for node in nodes), "every node to know the others"
            )
        except AssertionError as error:
            raise HandshakeTimeout(str(error)) from None
        for master, replica in zip(cluster.masters, cluster.replicas, strict=False):
            with replica.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", master.node_id)
        if wait:
            cluster.wait_started()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _knows_all(node: RedisNode, count: int) -> bool:
    with node.client() as client:
        lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
    return len(lines) == count and not any("handshake" in line or "noaddr" in line for line in lines)


def _replica_in_sync(replica: RedisNode) -> bool:
    with replica.client() as client:
        info = client.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"
