"""Recovering the runs of workers that died (SIGKILL, OOM, a lost host, a frozen process).

Every ``recovery_interval`` one live worker (whoever takes the recovery lock) scans rq's
running registry of every queue for orphans: runs whose worker has not heartbeated for
``worker_ttl`` seconds by the server's clock (workers/lua/orphans.lua). The registry itself is
the evidence, so a run is found whatever happened to its worker's own bookkeeping (a worker
that deregistered while a delayed call claimed a job for it, an in-flight set deleted by hand).

- A run whose handler never started (it waited in the dead worker's prefetch buffer) goes
  back to the head of its queue without using an attempt.
- A run that started counts as a failed attempt ("WorkerLost") and follows the retry policy
  like any other failure, except that the retry is immediate: a crash says nothing about the
  job, so there is nothing to back off from. So a job runs again within about
  ``worker_ttl + recovery_interval`` (7 s by default) of its worker's death, or is
  dead-lettered if that was its last attempt.
- Silent workers that hold no run any more are then forgotten (workers/lua/forget.lua).

No live worker is presumed dead after Redis itself was stopped or stalled: the first heartbeat
after such a gap opens a grace of ``worker_ttl`` during which nothing is recovered.

rq's own recovery (a started job's registry score expiring, then registry cleanup) never
sees chumon's runs: their running-registry score is +inf, rq's convention for "no timeout".
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from workers import locks
from workers.codec import decode_data, parse_iso, raw_bytes, readable, shown
from workers.execution import Claimed, Outcome
from workers.joblog import JobLog, context_of
from workers.keys import Keys, is_dead_letter_queue, raw_key
from workers.metrics import RuntimeMetrics
from workers.presence import grace_params
from workers.queueindex import QueueIndex
from workers.readkeys import page_keys, recover_keys
from workers.scripts import Scripts
from workers.settings import RuntimeSettings
from workers.settle import Settler, settle_ctx

PAGE = 200  # runs read per script call: bounded work
FORGET_COUNT = 50  # silent workers judged per forget call
FORGET_RUNS = 200  # runs of a silent worker's in-flight set read per call


class Reaper:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        settler: Settler,
        settings: RuntimeSettings,
        own_name: str,
        log: logging.Logger,
        *,
        metrics: RuntimeMetrics | None = None,
        joblog: JobLog | None = None,
        queues: list[str] | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.settler = settler
        self.settings = settings
        self.own_name = own_name
        self.log = log
        self.metrics = metrics
        self.joblog = joblog or JobLog()
        self.grace = grace_params(settings.worker_ttl, settings.heartbeat_interval)
        self.own_queues = list(queues or [])  # recovered even if rq:queues does not list them
        self.index = QueueIndex(redis, keys, log=log)

    def run(self) -> int:
        """Recover every orphaned run, unless another worker is doing it; return the runs recovered."""
        lock_ms = max(100, int(self.settings.recovery_interval * 1000 * 0.9))
        if not locks.take(self.redis, self.keys.recovery_lock, self.own_name, lock_ms):
            return 0
        recovered = 0
        for queue in self.queues():
            recovered += self.recover_queue(queue)
        self.forget()
        return recovered

    def queues(self) -> list[str]:
        """The queues to look at: rq's index of queues (rq:queues) and this worker's own, so a
        queue is recovered even when the index lost it or holds something else than a set."""
        found = dict.fromkeys(self.own_queues)
        found.update(dict.fromkeys(q for q in self.index.names() if not is_dead_letter_queue(q)))
        return list(found)

    def recover_queue(self, queue: str) -> int:
        recovered, offset = 0, 0
        while True:
            plan = {
                "queue": queue,
                "offset": offset,
                "count": PAGE,
                "ttl": self.settings.worker_ttl,
                "events": self.settings.events_cap,  # a `released` job event per run put back
                **self.grace,
            }
            declared = page_keys(self.redis, self.keys, queue, offset, PAGE)
            reply = self.scripts.run("orphans", plan, keys=declared)
            scanned, orphans, released, stale = int(reply[0]), reply[1], reply[2], int(reply[3])
            if released:
                recovered += len(released)
                self.log.warning(
                    "queue %s: %d run(s) of dead workers had not started; back at the head of the queue "
                    "without using an attempt", queue, len(released),
                )  # fmt: skip
            if stale:
                self.log.warning("queue %s: %d stale member(s) of the running registry removed", queue, stale)
            recovered += self._settle(queue, orphans)
            if scanned < PAGE:
                return recovered
            offset += scanned - len(orphans) - len(released) - stale

    def _settle(self, queue: str, rows: list[Any]) -> int:
        """Settle started orphans as failed attempts, one dead worker at a time."""
        by_worker: dict[str, list[Outcome]] = {}
        for row in rows:
            worker = readable(row[2]) or shown(row[2])
            by_worker.setdefault(worker, []).append(self._lost(queue, row, worker))
        recovered = 0
        for worker, outcomes in by_worker.items():
            plan = self.settler.plan(outcomes, worker=worker)
            ctx = settle_ctx(self.settings, worker)
            effect_keys = [outcome.claimed.effect_key for outcome in outcomes]
            declared = recover_keys(self.redis, self.keys, plan.failed, effect_keys)
            reply = self.scripts.run(
                "recover", {"ctx": ctx, "failed": plan.failed, **self.grace}, keys=declared
            )
            count, lost = int(reply[0]), {readable(i) for i in reply[1]}
            recovered += count
            self._report(worker, outcomes, plan.actions, lost, plan.retried, plan.dead)
            if int(reply[3]):
                self.log.warning("dead-letter cap removed %d old dead letter(s)", int(reply[3]))
        self.joblog.flush()
        return recovered

    def _report(
        self, worker: str, outcomes: list[Outcome], actions: list[str], lost: set[str | None],
        retried: int, dead: int,
    ) -> None:  # fmt: skip
        for outcome, action in zip(outcomes, actions, strict=True):
            claimed = outcome.claimed
            if claimed.job_id in lost:
                continue
            if self.metrics is not None:
                self.metrics.recovered.labels(claimed.queue).inc()
            self.joblog.record(
                f"recovered-{action}", job_id=claimed.job_id, queue=claimed.queue,
                job_type=outcome.job_type.name if outcome.job_type else None, attempt=claimed.attempt,
                context=context_of(outcome.job_type.log_fields if outcome.job_type else (), outcome.payload),
                detail=f"worker {worker} died",
            )  # fmt: skip
        self.log.warning(
            "recovered %d run(s) of dead worker %s (%d retried, %d dead-lettered, %d already settled)",
            len(outcomes) - len(lost), worker, retried, dead, len(lost),
        )  # fmt: skip

    def _silent(self) -> tuple[list[Any], list[str | bytes]]:
        """The workers silent for ``worker_ttl`` by the server's clock (at most ``FORGET_COUNT``),
        the runs of each one's in-flight set, and every key forget.lua may touch for them:
        read just before the call, which touches nothing else. Names are kept as bytes for the
        keys: a name that is not UTF-8 (hand-written garbage) is forgotten like any other."""
        keys = self.keys
        declared: dict[str | bytes, None] = dict.fromkeys([keys.live_workers, keys.liveness, keys.RQ_WORKERS])
        seconds, micros = self.redis.time()
        cutoff = seconds + micros / 1e6 - self.settings.worker_ttl
        try:
            raw = self.redis.zrangebyscore(keys.live_workers, "-inf", cutoff, start=0, num=FORGET_COUNT)
        except ResponseError:  # not a sorted set: the script replaces it
            return [], list(declared)
        workers = [
            name for name in (raw_bytes(w) if isinstance(w, bytes | str) else None for w in raw) if name
        ]
        with self.redis.pipeline(transaction=False) as pipe:
            for worker in workers:
                pipe.srandmember(raw_key(keys.inflight, worker), FORGET_RUNS)
                pipe.hget(raw_key(keys.rq_worker, worker), "queues")
            replies = pipe.execute(raise_on_error=False)
        read: list[Any] = []
        for i, worker in enumerate(workers):
            runs, queues = replies[2 * i], replies[2 * i + 1]
            names = [readable(r) or "" for r in runs] if isinstance(runs, list) else []
            if readable(worker) is not None:  # else a name JSON cannot carry: the script reads its runs
                read.append([readable(worker), names])
            declared.update(dict.fromkeys([raw_key(keys.inflight, worker), raw_key(keys.rq_worker, worker)]))
            listed = readable(queues) if isinstance(queues, bytes | str) else None
            queue_keys = [keys.rq_workers_by_queue(q) for q in (listed or "").split(",") if q]
            declared.update(dict.fromkeys(queue_keys))
        job_ids = [run.rpartition(":")[0] for _, names in read for run in names]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(keys.job(job_id), "origin")
            origins = pipe.execute(raise_on_error=False)
        for job_id, origin in zip(job_ids, origins, strict=True):
            declared[keys.job(job_id)] = None
            if isinstance(origin, bytes | str):
                declared[keys.wip(readable(origin) or "")] = None
        return read, list(declared)

    def _lost(self, queue: str, row: list[Any], worker: str) -> Outcome:
        """The failed attempt of one started orphan (row: see workers/lua/orphans.lua)."""
        job_id, execution, _worker, attempt, lost = row[:5]
        data, meta, _origin, timeout, retry, effect_key, started_at = row[5:12]
        claimed = Claimed.from_row(
            [job_id, execution, attempt, queue, "", data, meta, timeout, retry, effect_key, "", "", ""]
        )
        started = readable(started_at)
        if started:
            with contextlib.suppress(ValueError):
                claimed.started_at = parse_iso(started).timestamp()
        job_type, payload = None, None
        try:
            name, payload = decode_data(claimed.data)
            job_type = self.settler.registry.find(name)
        except Exception:  # an unreadable job dead-letters the same way it would on a worker
            pass
        why = f"worker {worker} stopped heartbeating while attempt {claimed.attempt} ran"
        if int(lost) >= 3:
            why = (
                f"{int(lost)} runs of this job were lost before it was seen to start: it may kill its worker"
            )
        return Outcome.failure(claimed, "WorkerLost", why, delay=0.0, job_type=job_type, payload=payload)

    def forget(self) -> None:
        read, keys = self._silent()
        reply = self.scripts.run("forget", {"count": FORGET_COUNT, "read": read, **self.grace}, keys=keys)
        forgotten, repaired = reply[0], int(reply[1])
        if forgotten:
            self.log.info("forgot %d silent worker(s) holding no run: %s", len(forgotten),
                          ", ".join(shown(w) for w in forgotten[:5]))  # fmt: skip
        if repaired:
            self.log.warning(
                "%d run(s) missing from the running registry were put back for recovery", repaired
            )
