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

import contextlib
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
        return _cluster_client(url, kwargs)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
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


def _cluster_client(url: str, kwargs: dict[str, Any]) -> Redis:
    """``redis+cluster://[[user]:password@]host:port[,host:port...]``: a RedisCluster client that
    learns the slot map from any of the seed nodes and follows MOVED and failovers."""
    from urllib.parse import unquote

    from redis.cluster import ClusterNode, RedisCluster

    scheme, _, rest = url.partition("://")
    auth, _, hosts = rest.rpartition("@")
    hosts = hosts.rstrip("/")
    nodes = []
    for part in filter(None, hosts.split(",")):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"the cluster URL's node {part!r} is not host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    if not nodes:
        raise ValueError("the cluster URL names no node (redis+cluster://host:port,host:port)")
    if auth:
        user, _, password = auth.partition(":")
        kwargs = {**kwargs, "password": unquote(password)}
        if user:
            kwargs["username"] = unquote(user)
    if scheme.startswith("rediss"):
        kwargs = {**kwargs, "ssl": True}
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException

    try:  # RedisCluster asks the seed nodes for the slot map at once
        client: Redis = RedisCluster(startup_nodes=nodes, max_connections=MAX_CONNECTIONS, **kwargs)  # type: ignore[assignment]
    except RedisClusterException as exc:  # not a RedisError: said as one, as any unreachable server
        raise RedisConnectionError(f"no seed node of the cluster answered: {exc}") from None
    return client  # typed as Redis: chumon calls only what both clients have (is_cluster tells)


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a Redis Cluster client: the cluster layout (workers/keys.py)."""
    from redis.cluster import RedisCluster

    return isinstance(redis, RedisCluster)


def cluster_node_client(redis: Any, key: str | bytes) -> Redis:
    """A plain client of the primary serving ``key``'s slot (for a blocking read or a WAIT that
    must stay on one connection of that node)."""
    node = redis.get_node_from_key(key)
    if node.redis_connection is None:
        redis.nodes_manager.initialize()
        node = redis.get_node_from_key(key)
    client: Redis = node.redis_connection
    return client


def slot_client(redis: Redis, key: str | bytes) -> Redis:
    """The client for calls that stay in ``key``'s slot: on a cluster, the plain client of the
    primary serving it (a pipeline or a script sent straight to it costs a fifth of the cluster
    client's routing in Python: measured 232 against 1,243 us for an 8-command pipeline); on one
    Redis, ``redis`` itself. Errors go to ``slot_trouble``."""
    return cluster_node_client(redis, key) if is_cluster(redis) else redis


def slot_moved(exc: BaseException) -> bool:
    """Whether ``exc`` says the slot is served elsewhere (redis-py's MovedError, AskError, or a
    raw MOVED or ASK reply)."""
    from redis.exceptions import AskError, MovedError, ResponseError

    return isinstance(exc, MovedError | AskError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("MOVED", "ASK"))
    )


def slot_trouble(redis: Redis, exc: BaseException) -> None:
    """After ``exc`` from a ``slot_client``: on a cluster, a slot that moved (MOVED, ASK) or a
    primary that went away (a connection error) makes the slot map read again, so the next call
    goes where the slot is served now."""
    moved = slot_moved(exc)
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    lost = isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)
    if is_cluster(redis) and (moved or lost):
        cluster: Any = redis
        with contextlib.suppress(Exception):  # the map is read again on the next routed call anyway
            cluster.nodes_manager.initialize()


MIN_VERSION = (6, 2)
NOT_ON_CLUSTER = (
    "this does not run on Redis Cluster yet (the dashboard and rq-scheduler read rq's own keys; "
    'everything else does, docs/operations.md "Redis Cluster"): point it at one primary, with '
    "Sentinel for failover"
)


def server_version(redis: Redis) -> tuple[int, ...]:
    """The server's version as numbers (Valkey reports the Redis version it is compatible with);
    on a cluster, the oldest primary's."""
    if is_cluster(redis):
        infos = [node.redis_connection.info("server") for node in _primaries(redis)]
    else:
        infos = [redis.info("server")]
    versions = []
    for info in infos:
        raw = str(info.get("redis_version", "0"))
        versions.append(tuple(int(part) for part in raw.split(".")[:3] if part.isdigit()))
    return min(versions)


def _primaries(redis: Any) -> list[Any]:
    primaries = redis.get_primaries()
    if any(node.redis_connection is None for node in primaries):
        redis.nodes_manager.initialize()
        primaries = redis.get_primaries()
    return list(primaries)


def check_server(redis: Redis, *, cluster: bool = True) -> tuple[int, ...]:
    """Refuse a server chumon cannot serve, with one line that says why; return its version.

    ``cluster``: whether the caller runs on Redis Cluster (the runtime does, the order flow not yet)."""
    from workers.errors import ServerUnsupported

    version = server_version(redis)
    if version < MIN_VERSION:
        shown = ".".join(map(str, version)) or "unknown"
        raise ServerUnsupported(
            f"Redis {shown} is too old: chumon needs Redis 6.2 or later (or Valkey 7.2 or later)"
        )
    if is_cluster(redis):
        if not cluster:
            raise ServerUnsupported(f"REDIS_URL is a Redis Cluster: {NOT_ON_CLUSTER}")
        return version
    # a cluster node reached with a plain URL would take the first write of a script and refuse
    # the next with MOVED or CROSSSLOT: half an order written. Refused before anything is.
    if str(redis.info("cluster").get("cluster_enabled", "0")) == "1":
        raise ServerUnsupported(
            "the server is a Redis Cluster node: use a redis+cluster://host:port,... URL "
            f"(the job runtime's cluster layout; {NOT_ON_CLUSTER})"
        )
    return version
