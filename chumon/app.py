"""The composition root: settings, the Redis client and the job registry, wired once."""

from __future__ import annotations

import importlib
from typing import Any

from redis import Redis

from workers.connection import RedisOptions, connect
from workers.jobtypes import JobRegistry


def redis_client(url: str, options: RedisOptions | None = None) -> Redis:
    """The Redis client for a process (workers/connection.py: time-outs, keepalive, Sentinel).

    Connects lazily, on first command; raises ValueError for a URL it cannot use.
    """
    return connect(url, options)


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
