"""Following a Sentinel failover at once, not ~10 s later (``redis+sentinel://`` URLs).

redis-py's Sentinel pool asks Sentinel for the primary only when it opens a connection, and
opens one only after a connection error or a READONLY reply. In a planned failover
(``SENTINEL FAILOVER``) the old primary keeps accepting writes for about 10 s after the
replica was promoted, until Sentinel demotes it, and then discards them when it resyncs from
the new one: pooled connections kept writing there, and those writes vanished without any
error. Two parts close that gap:

- ``EpochSentinel`` asks every Sentinel and trusts the one with the highest configuration
  epoch: right after a switch, a Sentinel that has not heard of it yet still names the old
  primary (redis-py would believe the first one that answers). It asks them whenever a
  connection opens: a Sentinel that refuses costs nothing, one that does not answer at all
  costs ``CHUMON_REDIS__CONNECT_TIMEOUT`` per new connection until it is back;
- ``SwitchWatcher``, a daemon thread per client, subscribes to ``+switch-master`` (Sentinel
  Pub/Sub) and, on a switch of its service, resolves the primary again: idle connections to
  the old primary are closed and busy ones are dropped when they come back to the pool
  (redis-py's ``SentinelConnectionPool`` does both once its address changed). It also
  resolves every ``RESOLVE_EVERY`` seconds, so a switch announced while it was disconnected
  from every Sentinel is followed too. It never raises: a Sentinel that is down is retried
  with a backoff, the next one in the list first.

A command in flight on the old primary while the switch happens can still be lost; waiting
for a replica (``CHUMON_REDIS__REPLICAS_ACK``, workers/durability.py) turns that into an error.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

log = logging.getLogger("chumon.redis")

CHANNEL = "+switch-master"
RESOLVE_EVERY = 5.0
MAX_BACKOFF = 5.0


class EpochSentinel(Sentinel):
    """A Sentinel client that names the primary of the newest configuration every Sentinel knows."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        best: tuple[int, str, int] | None = None
        errors: list[str] = []
        for sentinel in self.sentinels:
            try:
                masters: Any = sentinel.sentinel_masters()
                state = masters.get(service_name)
            except (RedisError, OSError) as exc:
                errors.append(f"{sentinel}: {exc!r}")
                continue
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                epoch = int(state.get("config-epoch", 0))
                if best is None or epoch > best[0]:
                    best = (epoch, state["ip"], int(state["port"]))
        if best is None:
            detail = f": {', '.join(errors)}" if errors else ""
            raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")
        return best[1], best[2]


class FollowingRedis(Redis):
    """The client of a Sentinel URL: closing it also stops its watcher."""

    watcher: SwitchWatcher | None = None

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        super().close()


class SwitchWatcher:
    """Re-resolves one pool's primary on ``+switch-master`` (see the module's docstring)."""

    def __init__(
        self, pool: SentinelConnectionPool, sentinels: list[tuple[str, int]], options: dict[str, Any]
    ) -> None:
        self._pool = weakref.ref(pool)
        self.service = str(pool.service_name)
        self.sentinels = list(sentinels)
        self.options = options
        self.switches = 0
        self.subscribed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sentinel-watch-{self.service}", daemon=True)

    def start(self) -> SwitchWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def follow(self) -> bool:
        """Ask the Sentinels for the primary now; True if it changed. False if the pool is gone."""
        pool = self._pool()
        if pool is None:
            self._stop.set()
            return False
        before = pool.master_address
        try:
            after = pool.get_master_address()  # type: ignore[no-untyped-call]  # closes idle connections elsewhere
        except (RedisError, OSError):
            return False
        if before is not None and after != before:
            self.switches += 1
            log.warning("redis: %s primary is now %s:%s (was %s:%s)", self.service, *after, *before)
            return True
        return False

    def _run(self) -> None:
        failures = 0
        index = 0
        while not self._stop.is_set():
            host, port = self.sentinels[index % len(self.sentinels)]
            try:
                self._listen(host, port)
                failures = 0
            except (RedisError, OSError, ValueError) as exc:
                failures += 1
                index += 1
                if failures == len(self.sentinels):
                    log.warning("redis: no Sentinel answers (%s:%s: %s); retrying", host, port, exc)
                self._stop.wait(min(MAX_BACKOFF, 0.1 * 2 ** min(failures, 6)))

    def _listen(self, host: str, port: int) -> None:
        client = Redis(host=host, port=port, **self.options)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(CHANNEL)
            self.subscribed = True
            self.follow()  # a switch may have happened while we were not subscribed
            resolved = time.monotonic()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                switched = message is not None and self._names_us(message.get("data"))
                if switched or time.monotonic() - resolved >= RESOLVE_EVERY:
                    self.follow()
                    resolved = time.monotonic()
        finally:
            self.subscribed = False
            pubsub.close()
            client.close()

    def _names_us(self, data: Any) -> bool:
        """``<service> <old ip> <old port> <new ip> <new port>``."""
        raw = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        return raw.split(" ", 1)[0] == self.service
