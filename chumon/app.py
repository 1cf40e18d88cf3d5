"""The composition root: settings, the Redis client and the job registry, wired once."""

from __future__ import annotations

import importlib
from typing import Any

from redis import Redis

from chumon.logs import mask_url
from workers.jobtypes import JobRegistry


def redis_client(url: str) -> Redis:
    """The Redis client for a process. Connects lazily, on first command.

    ``redis+sentinel://[:password@]host:port[,host2:port2]/service[/db]`` asks Redis Sentinel
    for the current primary (and again after a failover), with the same URL rq-dashboard takes.
    """
    if url.startswith("redis+sentinel://"):
        from redis_sentinel_url import connect

        _sentinel, client = connect(url, client_options={"health_check_interval": 30})
        if client is None:
            raise ValueError(f"{mask_url(url)!r} names no Sentinel service (add /<service name> to the URL)")
        return client  # type: ignore[no-any-return]
    return Redis.from_url(url, health_check_interval=30)


def load_registry(path: str) -> JobRegistry:
    """``module:attribute`` -> the JobRegistry it names (the operator's choice, never a job's)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"app {path!r} must look like module:attribute")
    value: Any = getattr(importlib.import_module(module_name), attribute)
    if callable(value) and not isinstance(value, JobRegistry):
        value = value()
    if not isinstance(value, JobRegistry):
        raise TypeError(f"{path} is not a JobRegistry")
    return value
