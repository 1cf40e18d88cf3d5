"""What bench/cluster.py's drains and bench/clusterorders.py's orders share: fresh servers (one
Redis, or a local cluster of N primaries), Redis CPU over a run, the worker processes' env."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis

from bench import ROOT
from bench.drain import RunFailed

# the suite's local servers (tests/redisproc.py, tests/clusterproc.py), imported by name as
# bench.failover does: they stay out of mypy's run
redisproc: Any = importlib.import_module("tests.redisproc")
clusterproc: Any = importlib.import_module("tests.clusterproc")
POLL = 0.02


@contextmanager
def servers(primaries: int) -> Iterator[tuple[str, list[Redis]]]:
    """(the URL, a client of each primary): one plain Redis for 0, else a local cluster. Nothing
    is kept on disk."""
    if primaries == 0:
        with redisproc.RedisServer(appendonly=False) as server:
            client = server.client()
            yield server.url, [client]
            client.close()
        return
    with clusterproc.ClusterNodes(primaries=primaries, replicas=0, appendonly=False) as nodes:
        clients = [server.client() for server in nodes.servers]
        yield nodes.url, clients
        for client in clients:
            client.close()


class CpuMeter:
    """Each server's CPU seconds (user + system) from ``start`` to ``stop``."""

    def __init__(self, nodes: list[Redis]) -> None:
        self.nodes = nodes
        self.before: list[float] = []
        self.used: list[float] = []

    @staticmethod
    def seconds(client: Redis) -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def start(self) -> None:
        self.before = [self.seconds(node) for node in self.nodes]

    def stop(self) -> None:
        after = [self.seconds(node) for node in self.nodes]
        self.used = [a - b for a, b in zip(after, self.before, strict=True)]

    def row(self, count: int, elapsed: float, what: str) -> dict[str, Any]:
        """``<what>s_per_s``, Redis CPU µs per one, each primary's busy share, the Redis-bound
        ceiling (``count`` over the busiest primary's CPU seconds), for ``count`` in ``elapsed`` s."""
        return {
            f"{what}s_per_s": count / elapsed,
            f"redis_cpu_us_per_{what}": sum(self.used) / count * 1e6,
            "busy_per_primary": [round(c / elapsed, 2) for c in self.used],
            f"ceiling_{what}s_per_s": count / max(max(self.used), 1e-9),
            "keys_per_primary": [int(node.dbsize()) for node in self.nodes],
        }


def child_env(url: str, **extra: str) -> dict[str, str]:
    """A chumon process's environment: no inherited CHUMON_* or REDIS_URL, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUMON_") and k != "REDIS_URL"}
    env.update(
        REDIS_URL=url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
    )
    env.update(extra)
    return env


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RunFailed(f"bench.cluster: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)
