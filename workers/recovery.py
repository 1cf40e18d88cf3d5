"""Recovering the jobs of workers that died (SIGKILL, OOM, a lost host).

Every live worker, every ``recovery_interval`` seconds, looks for workers whose last
heartbeat is older than ``worker_ttl``. Each run such a worker held counts as a failed
attempt ("WorkerLost") and follows the retry policy like any other failure, except that the
retry is immediate: a crash says nothing about the job, so there is nothing to back off
from. So a job is running again within ``worker_ttl + recovery_interval`` (12 s by default)
of its worker's death, or is dead-lettered if that was its last attempt.

rq's own recovery (a started job's registry score expiring, then registry cleanup) never
sees chumon's runs: their started-registry score is +inf, rq's convention for "no timeout".
"""

from __future__ import annotations

import logging

from redis import Redis

from workers.codec import decode_data, parse_iso, text, texts
from workers.execution import Claimed, Outcome
from workers.joblog import JobLog, context_of
from workers.keys import Keys
from workers.metrics import RuntimeMetrics
from workers.scripts import Scripts
from workers.settings import RuntimeSettings
from workers.settle import Settler, settle_ctx

_FIELDS = (
    "execution",
    "attempt",
    "origin",
    "data",
    "meta",
    "timeout",
    "retry",
    "effect_key",
    "result_ttl",
    "started_at",
)


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

    def run(self, now: float) -> int:
        """Recover every worker silent for longer than worker_ttl; return the runs recovered."""
        silent_since = now - self.settings.worker_ttl
        names = texts(self.redis.zrangebyscore(self.keys.live_workers, "-inf", silent_since))
        dead = [name for name in names if name != self.own_name]
        return sum(self.recover(name, now, silent_since) for name in dead)

    def recover(self, worker: str, now: float, silent_since: float) -> int:
        runs = [text(member) for member in self.redis.smembers(self.keys.inflight(worker))]
        with self.redis.pipeline(transaction=False) as pipe:
            for run in runs:
                pipe.hmget(self.keys.job(run.partition(":")[0]), _FIELDS)
            pipe.hget(self.keys.rq_worker(worker), "queues")
            *rows, queues = pipe.execute()
        outcomes = [
            outcome
            for run, row in zip(runs, rows, strict=True)
            if (outcome := self._lost(run, row, worker)) is not None
        ]
        plan = self.settler.plan(outcomes, now)
        reply = self.scripts.run(
            "recover",
            {
                "ctx": settle_ctx(self.settings, worker, now),
                "silent_since": silent_since,
                "failed": plan.failed,
                "queues": queues.decode().split(",") if queues else [],
            },
        )
        recovered, lost, dropped = int(reply[0]), reply[1], int(reply[2])
        if recovered < 0:
            self.log.info("worker %s is alive again; nothing recovered", worker)
            return 0
        lost_ids = {text(i) for i in lost}
        for outcome, action in zip(outcomes, plan.actions, strict=True):
            claimed = outcome.claimed
            if claimed.job_id in lost_ids:
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
            recovered, worker, plan.retried, plan.dead, len(lost),
        )  # fmt: skip
        if dropped:
            self.log.warning("dead-letter cap removed %d old dead letter(s)", dropped)
        self.joblog.flush()
        return recovered

    def _lost(self, run: str, row: list[bytes | None], worker: str) -> Outcome | None:
        job_id, _, execution = run.partition(":")
        fields = dict(zip(_FIELDS, row, strict=True))
        if fields["execution"] != execution.encode():
            return None  # settled meanwhile; the script drops the stale member
        origin = (fields["origin"] or b"").decode()
        claimed = Claimed(
            job_id=job_id,
            execution=execution,
            attempt=int(fields["attempt"] or 1),
            queue=origin,
            data=fields["data"] or b"",
            meta=fields["meta"] or b"",
            timeout=float(fields["timeout"] or 0),
            retry=(fields["retry"] or b"").decode(),
            effect_key=(fields["effect_key"] or b"").decode(),
            result_ttl=None,
        )
        if fields["started_at"]:
            claimed.started_at = parse_iso(fields["started_at"].decode()).timestamp()
        job_type, payload = None, None
        try:
            name, payload = decode_data(claimed.data)
            job_type = self.settler.registry.find(name)
        except Exception:  # an unreadable job dead-letters the same way it would on a worker
            pass
        return Outcome.failure(
            claimed,
            "WorkerLost",
            f"worker {worker} stopped heartbeating while attempt {claimed.attempt} ran",
            delay=0.0,
            job_type=job_type,
            payload=payload,
        )
