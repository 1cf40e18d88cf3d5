"""Connecting to Redis: the one place that decides how a client talks to the server.

Every process builds its clients here, so every connection has the same protections:

- **time-outs**: a connect that does not complete in ``connect_timeout`` seconds, or a reply
  that does not arrive within ``socket_timeout`` seconds, raises ``redis.TimeoutError`` (a
  ``RedisError``): a black-holed connection (no RST, no reply) cannot block a worker for ever;
- **TCP keepalive**, so a peer that vanished is noticed on idle connections too;
- **health checks** of pooled connections idle for ``health_check_interval`` seconds.

No command chumon sends blocks longer than ``socket_timeout``: the listener's XREAD blocks 1 s,
scripts are bounded to milliseconds. Callers never retry here; each long-running loop handles
``RedisError`` itself (backs off, keeps its state, resumes).

``redis+sentinel://[:password@]host:port[,host2:port2]/service[/db]`` asks Redis Sentinel for the
current primary, and follows a failover as soon as Sentinel announces it (workers/sentinel.py).
"""

from __future__ import annotations

import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis


class RedisOptions(BaseModel):
    """How clients talk to Redis (``CHUMON_REDIS__SOCKET_TIMEOUT=5``, ...). Durations in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    socket_timeout: float = Field(
        default=5.0, gt=0, le=300, description="A reply later than this is an error (TimeoutError)."
    )
    connect_timeout: float = Field(default=3.0, gt=0, le=300, description="A connect slower than this fails.")
    keepalive: bool = Field(default=True, description="TCP keepalive on every connection.")
    keepalive_idle: int = Field(default=10, ge=1, le=7200, description="Idle seconds before the first probe.")
    health_check_interval: int = Field(
        default=30, ge=0, le=3600, description="PING a pooled connection idle this long before using it."
    )
    replicas_ack: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Orders, enqueues and saga steps wait for this many replicas (WAIT); 0: do not wait.",
    )
    replicas_timeout_ms: int = Field(
        default=1000, gt=0, le=60_000, description="How long a write waits for its replicas (milliseconds)."
    )


# redis-py 8 caps a pool at 100 connections; a worker's runner threads hold one each (up to 1,024
# slots), beside the conductor's, the heartbeat's and the listener's.
MAX_CONNECTIONS = 2048


def client_options(options: RedisOptions) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis`` (and its connection pool) from ``options``."""
    kwargs: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "health_check_interval": options.health_check_interval,
    }
    if options.keepalive:
        kwargs["socket_keepalive"] = True
        kwargs["socket_keepalive_options"] = _keepalive_options(options.keepalive_idle)
    return kwargs


def _keepalive_options(idle: int) -> dict[int, int]:
    """Probe after ``idle`` s, every ``idle/2`` s, give up after 3 (Linux names; others: defaults)."""
    wanted = {"TCP_KEEPIDLE": idle, "TCP_KEEPINTVL": max(1, idle // 2), "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def connect(url: str, options: RedisOptions | None = None) -> Redis:
    """A client for ``url``. Connects lazily, on the first command; raises ValueError for a bad URL."""
    kwargs = client_options(options or RedisOptions())
    if url.startswith("redis+sentinel://"):
        return _sentinel_client(url, kwargs)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        raise ValueError(CLUSTER_UNSUPPORTED)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a Redis URL starts with redis://, rediss://, unix:// or redis+sentinel://")
    try:
        return Redis.from_url(url, max_connections=MAX_CONNECTIONS, **kwargs)
    except ValueError as exc:  # e.g. a port that is not a number
        raise ValueError(f"the Redis URL is not valid: {exc}") from None


def _sentinel_client(url: str, kwargs: dict[str, Any]) -> Redis:
    """The primary of the URL's service, followed across failovers (workers/sentinel.py)."""
    from redis.sentinel import SentinelConnectionPool
    from redis_sentinel_url import parse_sentinel_url

    from workers.sentinel import EpochSentinel, FollowingRedis, SwitchWatcher

    sentinel_kwargs = {k: v for k, v in kwargs.items() if k != "health_check_interval"}
    try:
        parsed = parse_sentinel_url(url, sentinel_options=sentinel_kwargs, client_options=kwargs)
    except ValueError as exc:
        raise ValueError(f"the Sentinel URL is not valid: {exc}") from None
    service = parsed.default_client.service
    if not service:
        raise ValueError("the Sentinel URL names no service (add /<service name> to the URL)")
    options = parsed.sentinel_options
    sentinel = EpochSentinel(parsed.hosts, sentinel_kwargs=options, **parsed.client_options)  # type: ignore[no-untyped-call]
    client: FollowingRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        service, redis_class=FollowingRedis, max_connections=MAX_CONNECTIONS
    )
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    client.watcher = SwitchWatcher(pool, parsed.hosts, options).start()
    return client


MIN_VERSION = (6, 2)
CLUSTER_UNSUPPORTED = (
    "Redis Cluster is not supported yet: chumon needs one primary (with Sentinel for failover), "
    "since its scripts and transactions span keys of many slots"
)


def server_version(redis: Redis) -> tuple[int, ...]:
    """The server's version as numbers (Valkey reports the Redis version it is compatible with)."""
    info = redis.info("server")
    raw = str(info.get("redis_version", "0"))
    return tuple(int(part) for part in raw.split(".")[:3] if part.isdigit())


def check_server(redis: Redis) -> tuple[int, ...]:
    """Refuse a server chumon cannot serve, with one line that says why; return its version."""
    from workers.errors import ServerUnsupported

    version = server_version(redis)
    if version < MIN_VERSION:
        shown = ".".join(map(str, version)) or "unknown"
        raise ServerUnsupported(
            f"Redis {shown} is too old: chumon needs Redis 6.2 or later (or Valkey 7.2 or later)"
        )
    # a cluster node would take the first write of a script and refuse the next with MOVED or
    # CROSSSLOT: half an order written. Refused before anything is.
    if str(redis.info("cluster").get("cluster_enabled", "0")) == "1":
        raise ServerUnsupported(f"the server is a Redis Cluster node. {CLUSTER_UNSUPPORTED}")
    return version
