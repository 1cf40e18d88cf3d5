"""What a job costs Redis: the commands the worker's step script runs per job, counted from the
server's own commandstats (commands inside scripts included), with the script called directly as
a worker calls it (no heartbeat or recovery beside it): its keys declared, the heads of the queue
read first (workers/stepkeys.py: a SORT per line).

A completed no-op job costs five commands of its own: the claim reads its hash (HMGET) and marks it
started (HSET); the completion checks the run still owns it (HMGET), writes it finished (HSET, with
its attempt, start and end) and sets its expiry (EXPIRE). Everything else a batch needs (popping ids,
rq's running and finished registries, the worker's in-flight set) is one command per key and call,
whatever the batch holds.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis import Redis

from tests.apps import sample
from workers import Enqueuer, RuntimeSettings
from workers.keys import Keys
from workers.scripts import Scripts
from workers.stepkeys import StepKeys

KEYS = Keys()
BATCH, BATCHES = 50, 4
# per call: a key each (zadd: the running and the finished registries)
# type: a check of the scheduled and running registries before anything is popped; every other key
# is written or read under pcall, which says when it holds something else
# sort: the worker's read of the heads of the list and the prioritized set (and, on the first call,
# of the scheduled registry) before a claim
PER_CALL = {
    "lpop": 1, "zadd": 2, "zrem": 1, "sadd": 1, "srem": 1, "time": 1, "type": 2, "smembers": 1, "sort": 3,
}  # fmt: skip


def server_version(redis: Redis) -> tuple[int, ...]:
    return tuple(int(part) for part in str(redis.info("server")["redis_version"]).split(".")[:2])


def calls(redis: Redis) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


@pytest.mark.parametrize("functions", [True, False], ids=["functions", "scripts"])
def test_a_no_op_job_costs_five_commands_and_a_batch_one_per_key(
    redis: Redis, settings: RuntimeSettings, functions: bool
) -> None:
    Enqueuer(redis, settings).enqueue_many(sample.echo, [{"text": f"m{i}"} for i in range(BATCH * BATCHES)])
    scripts = Scripts(redis, KEYS.lua_keyspace, functions=functions)
    ctx = {"worker": "w.1", "token": "t", "seq": 0, "claim_ttl_ms": 60_000, "defer_s": 1.0, "result_ttl": 500,
           "budget": BATCH + 128, "dlq_retention": 3600, "dlq_max_length": 100, "events": False}  # fmt: skip
    plan: dict[str, Any] = {"ctx": ctx, "started": [], "done": [], "failed": [], "released": []}
    plan["queues"] = ["q"]
    scripts.run("step", {**plan, "n": 0})  # loads the script (NOSCRIPT, SCRIPT LOAD) before counting
    redis.config_resetstat()
    done: list[list[Any]] = []
    step_keys = StepKeys(redis, KEYS, "w.1", ["q"], {}, [sample.echo.name])
    for batch in range(BATCHES + 1):  # each call settles the last batch and claims the next
        n = BATCH if batch < BATCHES else 0
        declared = step_keys.fixed + (step_keys.claim_keys(n, batch == 0) if n else [])
        declared += [key for item in done for key in (KEYS.job(item[0]), KEYS.job_logs(item[0]))]
        rows = scripts.run("step", {**plan, "done": done, "n": n}, keys=declared)[0]
        ctx["seq"] += len(rows)
        now = time.time()
        # a job that returned None: no result to write
        done = [[r[0].decode(), r[1].decode(), "q", "", 500, 0, 1, now, now, False, False] for r in rows]
        assert len(rows) == (BATCH if batch < BATCHES else 0)
    used = calls(redis)
    jobs, steps = BATCH * BATCHES, BATCHES + 1
    assert redis.zcard(KEYS.finished("q")) == jobs and redis.zcard(KEYS.wip("q")) == 0
    called = "fcall" if functions and server_version(redis) >= (7, 0) else "evalsha"
    assert used.get(called) == steps and used.get({"fcall": "evalsha"}.get(called, "fcall"), 0) == 0, used
    assert {name: used.get(name, 0) for name in ("hmget", "hset", "expire")} == {
        "hmget": 2 * jobs, "hset": 2 * jobs, "expire": jobs,
    }, used  # fmt: skip
    for name, keys in PER_CALL.items():
        assert used.get(name, 0) <= keys * steps, (name, used)  # one queue, one worker
    assert "hdel" not in used and "xadd" not in used, used  # no result, no separate write of the run
    per_job = sum(used.values()) / jobs
    assert per_job <= 6, used
