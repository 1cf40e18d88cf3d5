"""Draining already-queued jobs with one worker process, timed from Redis.

A run: empty Redis, enqueue N jobs (untimed, the system's own bulk path), start the worker
process, and poll the finished registry every few milliseconds from this process. The time
is from the moment the worker process says it starts working (``bench:t0``, written just
before its work loop, after imports and set-up) until the first poll that sees all N jobs
finished. At 20% and 80% of the jobs the poller snapshots INFO commandstats: the difference,
less the poller's own commands, is what Redis executed per job in steady state. INFO cpu
before the worker process starts and after the last poll gives the CPU time Redis spent
over the whole drain (``used_cpu_sys + used_cpu_user``), per job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from bench import COUNTER_KEY, QUEUE, ROOT, T0_KEY
from bench.redisenv import RedisEnv
from bench.systems import Adapter
from chumon.progress import Progress
from workers import RuntimeSettings
from workers.codec import texts
from workers.keys import Keys

POLL_INTERVAL = 0.005
MARKS = (0.2, 0.8)
DEFAULT_CONCURRENCY: int = RuntimeSettings.model_fields["worker_concurrency"].default


class RunFailed(Exception):
    """A run's result is wrong (counts, failures, duplicates) or it did not finish."""


@dataclass(frozen=True)
class Case:
    system: str
    workload: str
    concurrency: int | None = None

    @property
    def label(self) -> str:
        if self.system == "rq":
            return "rq SimpleWorker"
        if self.system == "chumon" and self.workload == "value":
            return f"chumon c={DEFAULT_CONCURRENCY}, returning a value"
        if self.system == "chumon" and self.concurrency is None:
            return f"chumon c={DEFAULT_CONCURRENCY} (default)"
        if self.system == "dramatiq":
            return f"dramatiq {self.concurrency} threads"
        return f"{self.system} c={self.concurrency}"


@dataclass
class Window:
    """Redis commands executed between the two snapshots, and the jobs finished meanwhile."""

    jobs: int
    calls: dict[str, int]

    def per_job(self) -> dict[str, float]:
        return {name: count / self.jobs for name, count in sorted(self.calls.items())} if self.jobs else {}

    def total_per_job(self) -> float:
        return sum(self.calls.values()) / self.jobs if self.jobs else 0.0


@dataclass
class DrainResult:
    case: Case
    jobs: int
    seconds: float
    window: Window | None
    summary: dict[str, Any] = field(default_factory=dict)
    redis_cpu: float = 0.0  # seconds of Redis CPU (sys + user) over the drain

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def redis_cpu_us_per_job(self) -> float:
        return self.redis_cpu / self.jobs * 1e6


class Child:
    """A ``python -m bench.child`` process; stderr goes to a file kept for error messages."""

    def __init__(
        self, case: Case, env: RedisEnv, expect: int, timeout: float, *, serve: bool = False, queue: str = ""
    ) -> None:
        command = [
            sys.executable, "-m", "bench.child", case.system, case.workload,
            "--redis-url", env.url, "--expect", str(expect), "--timeout", str(timeout),
        ]  # fmt: skip
        if case.concurrency is not None:
            command += ["--concurrency", str(case.concurrency)]
        if serve:
            command.append("--serve")
        if queue:  # rq's, when it serves beside chumon (the latency run)
            command += ["--queue", queue]
        self.case = case
        # files, not pipes: a chatty worker never blocks; both are closed by close()
        self.output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env.child_env(), stdout=self.output, stderr=self.errors, text=True
        )

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the process to stop by itself; its summary, or RunFailed."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RunFailed(f"{self.case.label}: the worker did not stop within {timeout:g} s") from None
        if self.proc.returncode != 0:
            raise RunFailed(f"{self.case.label}: worker exited {self.proc.returncode}: {self.stderr_tail()}")
        self.output.seek(0)
        out = self.output.read()
        try:
            summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise RunFailed(f"{self.case.label}: no summary from the worker: {out[-300:]!r}") from None
        return summary

    def terminate(self) -> None:
        """SIGTERM: a serving worker's own way to stop (finish() then waits for it)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr_tail(self, chars: int = 600) -> str:
        self.errors.seek(0)
        return self.errors.read()[-chars:]

    def close(self) -> None:
        self.kill()
        self.output.close()
        self.errors.close()


def redis_cpu(redis: Redis) -> float:
    """Seconds of CPU the Redis server has used so far (system and user, main thread included)."""
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class Poller:
    """Polls the done count on its own connection, so its commands can be told apart."""

    def __init__(self, env: RedisEnv, adapter: Adapter, total: int) -> None:
        self.env = env
        self.client = Redis.from_url(env.url, single_connection_client=True)
        self.address = str(self.client.client_info()["addr"])
        self.adapter = adapter
        self.total = total
        self.polls = 0
        self.snapshots: list[tuple[int, int, dict[str, int]]] = []  # (done, polls, commandstats)

    def done(self) -> int:
        self.polls += 1
        return self.adapter.done(self.client, self.total)

    def wait(self, child: Child, timeout: float, progress: Progress) -> float:
        """Poll until every job is finished; the time of that poll."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.done()
            now = time.time()
            self._maybe_snapshot(done)
            progress.update(done)
            if done >= self.total:
                return now
            if child.exited():
                raise RunFailed(
                    f"{child.case.label}: worker stopped at {done}/{self.total}: {child.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise RunFailed(f"{child.case.label}: {done}/{self.total} jobs finished after {timeout:g} s")
            time.sleep(POLL_INTERVAL)

    def _maybe_snapshot(self, done: int) -> None:
        """The first snapshot before the end; the second may fall on it, in a run too short to
        be seen between 80% and the end (the window then holds the last settle too)."""
        taken = len(self.snapshots)
        last = taken == len(MARKS) - 1
        if taken < len(MARKS) and done >= MARKS[taken] * self.total and (last or done < self.total):
            stats = self.client.info("commandstats")
            calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
            self.snapshots.append((done, self.polls, calls))

    def window(self) -> Window | None:
        """Commands between the two snapshots, less the poller's own (its polls and first INFO)."""
        if len(self.snapshots) < 2:
            return None
        (done_a, polls_a, a), (done_b, polls_b, b) = self.snapshots
        calls = {name: count - a.get(name, 0) for name, count in b.items()}
        polled = self.adapter.done_command
        calls[polled] = calls.get(polled, 0) - (polls_b - polls_a)
        calls["info"] = calls.get("info", 0) - 1
        return Window(done_b - done_a, {name: count for name, count in calls.items() if count > 0})

    def close(self) -> None:
        self.client.close()


def drain_timeout(jobs: int) -> float:
    return max(120.0, jobs / 20)


def run_drain(env: RedisEnv, adapter: Adapter, case: Case, jobs: int, batch: int, label: str) -> DrainResult:
    """One timed, checked drain of ``jobs`` jobs; raises RunFailed on any wrong count."""
    env.flush()
    adapter.add_bulk(case.workload, range(jobs), batch)
    if adapter.queued() != jobs:
        raise RunFailed(f"{case.label}: {adapter.queued()} jobs queued, expected {jobs}")
    timeout = drain_timeout(jobs)
    poller = Poller(env, adapter, jobs)
    cpu_before = redis_cpu(poller.client)
    child = Child(case, env, jobs, timeout)
    progress = Progress(jobs, label)
    try:
        ended = poller.wait(child, timeout, progress)
        cpu = redis_cpu(poller.client) - cpu_before
        summary = child.finish()
    finally:
        progress.close()
        child.close()
        poller.close()
    started = env.redis.get(T0_KEY)
    if started is None:
        raise RunFailed(f"{case.label}: the worker never wrote {T0_KEY}")
    verify(env, adapter, case, jobs, summary)
    return DrainResult(case, jobs, ended - float(started), poller.window(), summary, cpu)


def verify(env: RedisEnv, adapter: Adapter, case: Case, jobs: int, summary: dict[str, Any]) -> None:
    """Exact counts: every job finished once, none failed, retried or dead-lettered."""
    problems = [f"{name}={count}" for name, count in adapter.problems().items() if count]
    finished, queued = adapter.done(env.redis, jobs), adapter.queued()
    if finished != jobs or queued:
        problems.append(f"finished {finished}/{jobs}, {queued} still queued")
    if summary.get("done") != jobs:
        problems.append(f"the worker reports {summary.get('done')} jobs done, expected {jobs}")
    others = {k: v for k, v in summary.items() if k != "done" and v}
    if others:
        problems.append(f"the worker reports {others}")
    if case.workload == "write":
        counter = int(env.redis.get(COUNTER_KEY) or 0)
        if counter != jobs:
            problems.append(f"counter {counter}, expected exactly {jobs}")
    if case.system == "chumon":
        problems += unexpiring_jobs(env.redis)
    if problems:
        raise RunFailed(f"{case.label} {case.workload}: " + "; ".join(problems))


def unexpiring_jobs(redis: Redis, sample: int = 5) -> list[str]:
    """Finished jobs must expire (result_ttl): any sampled job hash without a TTL is a problem."""
    keys = Keys()
    ids = texts(redis.zrange(keys.finished(QUEUE), 0, sample - 1))
    return [f"finished job {i} has no TTL" for i in ids if redis.ttl(keys.job(i)) < 0]
