"""A primary, its replicas and three Sentinels of a test's own, on free loopback ports.

Built on tests/redisproc.py (append-only, fsynced on every write). The Sentinels run the same
binary with ``--sentinel`` and judge a primary down after ``down_after_ms`` of silence, so a
killed primary is replaced in a couple of seconds. ``primary_extra`` is given to every data
server (``min-replicas-to-write`` must hold on whichever one is promoted).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from chumon.devredis import find_server, free_port
from tests.redisproc import RedisServer, Servers

SERVICE = "shop"


class SentinelCluster(Servers):
    def __init__(
        self, *, replicas: int = 1, extra: list[str] | None = None, down_after_ms: int = 1000
    ) -> None:
        binary = find_server()
        if binary is None:
            raise RuntimeError("no redis-server binary")
        self.binary = binary
        self.extra = ["--repl-diskless-sync-delay", "0", *(extra or [])]
        self.down_after_ms = down_after_ms
        self.servers = [RedisServer(extra=self.extra)]
        self.servers += [RedisServer(extra=self.extra) for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.dir = tempfile.TemporaryDirectory(prefix="chumon-test-sentinel-")
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        first = self.servers[0]
        first.start()
        for replica in self.servers[1:]:
            replica.extra = [*self.extra, "--replicaof", "127.0.0.1", str(first.port)]
            replica.start()
        self.wait_for(lambda: self._replicas_online(first) == len(self.servers) - 1, "the replicas to sync")
        for port in self.sentinel_ports:
            config = Path(self.dir.name) / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir.name}\n"
                f"logfile {self.dir.name}/sentinel-{port}.log\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {first.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            self.sentinels.append(
                subprocess.Popen([self.binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
            )
        self.wait_for(self._sentinels_agree, "the Sentinels to see each other and the replicas")

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.sentinels:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in self.servers:
            server.kill()  # a graceful stop would wait for lagging replicas (shutdown-timeout)
            server.__exit__()
        self.dir.cleanup()

    def sentinel(self, index: int = 0) -> Redis:
        return Redis(
            host="127.0.0.1", port=self.sentinel_ports[index], socket_timeout=5, decode_responses=True
        )

    def primary_port(self) -> int:
        """The primary's port as the Sentinels' majority names it."""
        return int(self.sentinel().sentinel_get_master_addr_by_name(SERVICE)[1])

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def failover(self) -> None:
        """A planned failover, as an operator does it (SENTINEL FAILOVER; retried while the
        Sentinel answers NOGOODSLAVE because it has not judged the replica fit yet)."""
        self.wait_for(lambda: self.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE), "a failover")

    def wait_for(self, condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)

    def _replicas_online(self, server: RedisServer) -> int:
        info = server.client().info("replication")
        return sum(1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online")  # fmt: skip

    def _sentinels_agree(self) -> bool:
        for index in range(len(self.sentinel_ports)):
            master = self.sentinel(index).sentinel_master(SERVICE)
            if master["num-other-sentinels"] < len(self.sentinel_ports) - 1:
                return False
            if master["num-slaves"] < len(self.servers) - 1:
                return False
        return True
