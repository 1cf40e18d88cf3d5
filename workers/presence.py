"""A worker's presence in Redis: rq's worker registration plus chumon's liveness heartbeat.

rq's view (``rq:workers``, ``rq:workers:<queue>``, the ``rq:worker:<name>`` hash) keeps
``rq info`` and rq-dashboard's Workers tab truthful. chumon's own view is the sorted set
``<prefix>:workers`` of name -> server time of the last heartbeat, which live workers read to
find dead ones (workers/lua/presence.lua explains the liveness grace after a Redis stall).

The heartbeat runs in its own thread (``Heartbeat``), on its own connection, every
``heartbeat_interval``: a conductor busy with a slow call does not make its worker look dead.
It is also a watchdog: if the conductor has not come round its loop for ``stuck_after``
seconds (a deadlock, a call that never returns), the heartbeat stops, so that the other
workers recover its runs.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

from redis import Redis
from redis.exceptions import RedisError, ResponseError
from rq.version import VERSION as RQ_VERSION

from workers.codec import readable
from workers.keys import Keys
from workers.scripts import Scripts

Claims = Sequence[tuple[str, str]]  # (effect key, execution) of the runs the worker holds
Snapshot = tuple[str | None, Claims, list[str]]  # a running job, the claims, every job id held


def grace_params(ttl: float, heartbeat: float) -> dict[str, float]:
    """What the liveness scripts judge by (workers/lua/includes/liveness.lua): a worker silent
    for ``ttl`` is dead; a silence of all heartbeats longer than ``stall_gap`` opens a grace of
    ``grace`` seconds for the workers that beat within ``slack`` of its start."""
    return {"ttl": ttl, "stall_gap": max(3 * heartbeat, ttl / 2), "grace": ttl, "slack": 2 * heartbeat}


class Presence:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        name: str,
        queues: list[str],
        *,
        ttl: float,
        heartbeat: float,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.name = name
        self.queues = queues
        self.ttl = ttl
        self.grace = grace_params(ttl, heartbeat)

    def _plan(self, mode: str, **extra: object) -> dict[str, object]:
        return {
            "mode": mode,
            "worker": self.name,
            "queues": self.queues,
            "rq_ttl": int(self.ttl) + 60,
            **self.grace,
            **extra,
        }

    def _keys(self, claims: Claims = (), runs: Sequence[str] = ()) -> list[str]:
        """Every key lua/presence.lua may touch: the worker's rq hash and registrations, its
        in-flight set, liveness, cancel requests, the effect keys of ``claims`` and the job keys
        of ``runs`` (``job id:execution``, read from the in-flight set before leaving)."""
        keys = self.keys
        declared = [keys.rq_worker(self.name), keys.inflight(self.name), keys.RQ_WORKERS]
        declared += [keys.rq_workers_by_queue(queue) for queue in self.queues]
        declared += [keys.live_workers, keys.liveness, keys.cancel_requests()]
        declared += [keys.effect_key(claim[0]) for claim in claims]
        declared += [keys.job(run.rpartition(":")[0]) for run in runs]
        return declared

    def register(self) -> None:
        info = {
            "queues": ",".join(self.queues),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "ip_address": _address(),  # rq info prints it beside the host name
            "version": RQ_VERSION,
            "python_version": sys.version,
            "state": "idle",
            "successful_job_count": 0,
            "failed_job_count": 0,
            "total_working_time": 0,
        }
        fields = [str(part) for pair in info.items() for part in pair]
        self.scripts.run("presence", self._plan("register", info=fields), keys=self._keys())

    def heartbeat(self, current_job: str | None, claims: Claims, watch: list[str]) -> tuple[bool, list[str]]:
        """Renew liveness and the effect-key claims of the runs held.

        Returns whether this worker was still known (False: it had been declared dead and its runs
        recovered meanwhile), and the ids among ``watch`` that someone asked to stop.
        """
        plan = self._plan(
            "beat", claims=[list(claim) for claim in claims], claim_ttl_ms=int(self.ttl * 1000), watch=watch
        )
        if current_job:  # absent, not null: JSON null is a truthy value in Lua
            plan["current_job"] = current_job
        known, asked = self.scripts.run("presence", plan, keys=self._keys(claims))
        return bool(known), [readable(i) or "" for i in asked]

    def leave(self) -> bool:
        """Deregister; False if runs of this worker are left unsettled (recovery takes them at once)."""
        try:
            runs = sorted(readable(run) or "" for run in self.redis.smembers(self.keys.inflight(self.name)))
        except ResponseError:  # not a set: the script reports it
            runs = []
        return bool(self.scripts.run("presence", self._plan("leave"), keys=self._keys(runs=runs)))


class Heartbeat(threading.Thread):
    """Beats every ``interval`` seconds while the conductor makes progress (see the module docstring)."""

    def __init__(
        self,
        presence: Presence,
        snapshot: Callable[[], Snapshot],
        *,
        interval: float,
        stuck_after: float,
        on_forgotten: Callable[[], None],
        log: logging.Logger,
        on_cancel: Callable[[list[str]], None] = lambda ids: None,
    ) -> None:
        super().__init__(name="chumon-heartbeat", daemon=True)
        self.presence = presence
        self.snapshot = snapshot
        self.interval = interval
        self.stuck_after = stuck_after
        self.on_forgotten = on_forgotten
        self.on_cancel = on_cancel
        self.log = log
        self.stopped = threading.Event()
        self.progress = time.monotonic()  # the conductor's last round, set by the conductor
        self.failing = False

    def alive(self) -> None:
        """The conductor came round its loop."""
        self.progress = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            stuck = time.monotonic() - self.progress
            if stuck > self.stuck_after:
                self.log.error(
                    "worker %s: its loop has not moved for %.0f s; heartbeat withheld so that other "
                    "workers recover its runs", self.presence.name, stuck,
                )  # fmt: skip
                continue
            self.beat()

    def beat(self) -> None:
        current, claims, held = self.snapshot()
        try:
            known, asked = self.presence.heartbeat(current, claims, held)
        except (RedisError, OSError) as exc:
            if not self.failing:
                self.log.error("heartbeat: redis: %s; retrying every %.1f s", exc, self.interval)
            self.failing = True
            return
        if self.failing:
            self.log.info("heartbeat: redis answers again")
            self.failing = False
        if asked:
            self.on_cancel(asked)
        if not known:
            self.log.error("worker %s was presumed dead and its runs recovered; registered again",
                           self.presence.name)  # fmt: skip
            self.on_forgotten()

    def stop(self) -> None:
        self.stopped.set()


def _address() -> str:
    """This host's address as its name resolves, or 'unknown' (rq's word) when it does not."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "unknown"
