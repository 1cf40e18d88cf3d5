"""The runtime's fault tier: real worker processes, a real Redis, and faults injected at random.

A producer thread enqueues keyed jobs (``t.tally``: its start is written at once, its effect
with its completion) while the harness SIGKILLs workers and starts replacements, freezes Redis
(SIGSTOP) and kills it and restarts it from its append-only file; poison jobs are mixed in.
At the end it counts, from Redis alone:

- lost: jobs the producer had enqueued (its call returned) that never finished;
- duplicated: jobs whose effect happened more than once;
- stuck: jobs neither finished nor dead-lettered once the run has settled;
- poison that was not dead-lettered, and live workers that were presumed dead;

and, for every run in flight when its worker was killed, the time until that job started again
(the recovery latency), printed as a distribution. ``make chaos`` runs the long version;
``make test`` a short one.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from tests.apps import sample
from tests.redisproc import RedisServer
from tests.support import WorkerProcess, make_settings
from workers import EnqueueOptions, Enqueuer
from workers.codec import readable
from workers.keys import Keys

KEYS = Keys()
# production timing, not the fast test settings: the recovery latency measured is the real one
TIMING = {"heartbeat_interval": 1.0, "worker_ttl": 6.0, "recovery_interval": 1.0, "drain_timeout": 1.0}


@dataclass
class Plan:
    jobs: int = 300
    workers: int = 2
    concurrency: int = 4
    kills: int = 2
    freezes: int = 1
    restarts: int = 1
    poison: int = 10
    job_ms: tuple[float, float] = (5.0, 60.0)
    seed: int = 7
    deadline: float = 240.0


@dataclass
class Report:
    enqueued: int = 0
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    poison_not_dead: list[str] = field(default_factory=list)
    presumed_dead: int = 0
    extra_starts: int = 0
    faults: list[str] = field(default_factory=list)
    recovery: list[float] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"jobs enqueued {self.enqueued}, finished {self.finished}; faults: {', '.join(self.faults)}",
            f"lost {len(self.lost)}, duplicated effects {len(self.duplicated)}, stuck {len(self.stuck)}, "
            f"poison not dead-lettered {len(self.poison_not_dead)}, live workers presumed dead "
            f"{self.presumed_dead}",
            f"starts beyond one per job (retries after kills and outages; their effects did not repeat): "
            f"{self.extra_starts}",
        ]
        if self.recovery:
            ordered = sorted(self.recovery)

            def pct(p: float) -> float:
                return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

            out.append(
                f"recovery after a SIGKILL, {len(ordered)} runs: p50 {statistics.median(ordered):.1f} s, "
                f"p90 {pct(0.9):.1f} s, p99 {pct(0.99):.1f} s, max {ordered[-1]:.1f} s (target: p99 <= 10 s)"
            )
        return out


class Chaos:
    def __init__(self, plan: Plan, say: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.say = say
        self.rand = random.Random(plan.seed)
        self.server = RedisServer()
        self.workers: list[WorkerProcess] = []
        self.killed: list[WorkerProcess] = []
        self.acknowledged: dict[str, int] = {}  # job id -> n, for every enqueue that returned
        self.poison: list[str] = []
        self.kills: list[tuple[float, list[str]]] = []  # (time of the kill, job ids in flight)
        self.report = Report()
        self.producing = threading.Event()
        faults = plan.kills + plan.freezes + plan.restarts
        self.pace = (3.0 * faults + 2.0) / max(1, plan.jobs / 25)  # production spans the faults

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> Report:
        with self.server:
            self.workers = [self._worker() for _ in range(self.plan.workers)]
            try:
                producer = threading.Thread(target=self._produce, name="chaos-producer", daemon=True)
                producer.start()
                self._inject_faults()
                producer.join(timeout=self.plan.deadline)
                self._settle()
            finally:
                for worker in self.workers:
                    worker.stop()
            self._count()
        return self.report

    def _worker(self) -> WorkerProcess:
        return WorkerProcess(self.server.url, "--queues", "q", "hooks", "--concurrency",
                             str(self.plan.concurrency), **TIMING)  # fmt: skip

    def _client(self) -> Redis:
        return Redis.from_url(self.server.url, socket_timeout=5, socket_connect_timeout=2)

    def _produce(self) -> None:
        """Enqueue every job, retrying each batch with the same idempotency keys until it returns."""
        enqueuer = Enqueuer(self._client(), make_settings(self.server.url))
        self.producing.set()
        batch, n = 25, 0
        poison_every = max(1, self.plan.jobs // max(1, self.plan.poison))
        while n < self.plan.jobs:
            count = min(batch, self.plan.jobs - n)
            numbers = list(range(n, n + count))
            low, high = self.plan.job_ms
            while True:
                try:
                    ids = [
                        enqueuer.enqueue(
                            sample.tally,
                            {"n": i, "ms": self.rand.uniform(low, high)},
                            options=EnqueueOptions(idempotency_key=f"chaos-{i}"),
                        )
                        for i in numbers
                    ]
                    break
                except (RedisError, OSError):
                    time.sleep(0.2)
            self.acknowledged.update(zip(ids, numbers, strict=True))
            if len(self.poison) < self.plan.poison and n % poison_every == 0:
                self._add_poison(enqueuer)
            n += count
            time.sleep(self.pace)

    def _add_poison(self, enqueuer: Enqueuer) -> None:
        while True:
            try:
                # scheduled a moment ahead, so no worker can run it before its data is garbled
                job_id = enqueuer.enqueue(sample.echo, {"text": "poison"}, options=EnqueueOptions(delay=2))
                enqueuer.redis.hset(KEYS.job(job_id), "data", b"\x80\x04garbage")
                self.poison.append(job_id)
                return
            except (RedisError, OSError):
                time.sleep(0.2)

    def _inject_faults(self) -> None:
        self.producing.wait(10)
        faults = (
            ["kill"] * self.plan.kills + ["freeze"] * self.plan.freezes + ["restart"] * self.plan.restarts
        )
        self.rand.shuffle(faults)
        for fault in faults:
            time.sleep(self.rand.uniform(1.5, 4.0))
            getattr(self, f"_{fault}")()
            self.report.faults.append(fault)

    def _kill(self) -> None:
        victim = self.rand.choice([w for w in self.workers if w.proc.poll() is None])
        pid = victim.proc.pid
        victim.kill()
        at = time.time()
        in_flight = self._runs_of_pid(pid)
        self.kills.append((at, in_flight))
        self.killed.append(victim)
        self.workers.remove(victim)
        self.workers.append(self._worker())
        self.say(f"chaos: SIGKILLed worker pid {pid} with {len(in_flight)} run(s) in flight")

    def _runs_of_pid(self, pid: int) -> list[str]:
        for _ in range(50):
            try:
                redis = self._client()
                runs = []
                for member in redis.zrange("rq:wip:q", 0, -1):
                    job_id = (readable(member) or "").rpartition(":")[0]
                    owner = readable(redis.hget(KEYS.job(job_id), "worker_name")) or ""
                    if f".{pid}." in owner:
                        runs.append(job_id)
                return runs
            except (RedisError, OSError):
                time.sleep(0.2)
        return []

    def _freeze(self) -> None:
        seconds = self.rand.uniform(2.0, 7.0)
        self.say(f"chaos: Redis frozen (SIGSTOP) for {seconds:.1f} s")
        self.server.freeze()
        time.sleep(seconds)
        self.server.thaw()

    def _restart(self) -> None:
        seconds = self.rand.uniform(1.0, 4.0)
        self.say(f"chaos: Redis SIGKILLed, restarted from its append-only file {seconds:.1f} s later")
        self.server.kill()
        time.sleep(seconds)
        self.server.start()

    def _settle(self) -> None:
        """Wait until every acknowledged job finished (or the deadline), then a little longer."""
        redis = self._client()
        deadline = time.monotonic() + self.plan.deadline
        while time.monotonic() < deadline:
            try:
                done = sum(
                    1 for job_id in self.acknowledged if redis.hget(KEYS.job(job_id), "status") == b"finished"
                )
                dead = redis.llen("rq:queue:q.dlq")
            except (RedisError, OSError):
                time.sleep(0.5)
                continue
            if done == len(self.acknowledged) and dead >= len(self.poison):
                return
            time.sleep(0.5)
        self.say("chaos: deadline reached before every job settled")

    # -- counting -------------------------------------------------------------------------------------
    def _count(self) -> None:
        redis = self._client()
        report = self.report
        report.enqueued = len(self.acknowledged)
        effects = {readable(k): int(v) for k, v in redis.hgetall("chaos:effects").items()}
        dead = {readable(i) for i in redis.lrange("rq:queue:q.dlq", 0, -1)}
        for job_id, n in self.acknowledged.items():
            state = readable(redis.hget(KEYS.job(job_id), "status"))
            count = effects.get(str(n), 0)
            if state == "finished":
                report.finished += 1
            elif job_id in dead:
                report.stuck.append(f"{job_id} dead-lettered")
            else:
                report.stuck.append(f"{job_id} {state}") if state else report.lost.append(job_id)
            if count > 1:
                report.duplicated.append(f"n={n}: {count} times")
            elif count == 0 and state == "finished":
                report.lost.append(f"{job_id} finished without its effect")
            starts = redis.llen(f"chaos:starts:{job_id}")
            report.extra_starts += max(0, starts - 1)
        report.poison_not_dead = [job_id for job_id in self.poison if job_id not in dead]
        report.presumed_dead = sum(w.output.count("was presumed dead") for w in self.workers)
        for at, in_flight in self.kills:
            for job_id in in_flight:
                starts = [float(t) for t in redis.lrange(f"chaos:starts:{job_id}", 0, -1)]
                later = [t for t in starts if t > at]
                if later:
                    report.recovery.append(min(later) - at)


def outputs(chaos: Chaos) -> str:
    return "\n".join(w.output[-2000:] for w in chaos.workers + chaos.killed)


def run(plan: Plan, say: Callable[[str], None] = print) -> tuple[Report, Any]:
    chaos = Chaos(plan, say)
    report = chaos.run()
    for line in report.lines():
        say(line)
    return report, chaos
