"""The runtime's scripts (workers/lua) that declare in KEYS every key they touch, checked under MONITOR.

Redis Cluster, Dragonfly and ACL key patterns refuse or misroute a script that touches a key it
did not declare. A scenario that runs every path of the declaring scripts (enqueue with each
option, a flow, cancels, progress and log lines, dead letters requeued and removed by id and by
age, a worker registering, beating and leaving, housekeeping) runs under MONITOR
(tests/declaredkeys.py), and any key one of them touched outside its call's KEYS fails the test,
naming script and key. Where a script's keys depend on what Redis holds, its caller reads them
first; the tests below change Redis between that read and the call, and check the script touches
nothing it was not told of (forgetting workers, recovering a dead worker's runs, removing dead
letters by age, trimming kept jobs, a worker leaving, a cancel).

``DECLARING`` lists them: every runtime script; the test fails if a new one is not in it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel
from redis import Redis

from tests.declaredkeys import RUNTIME_SCRIPTS, Calls, watching
from tests.support import make_settings, run_burst, wait_until, worker_thread
from workers import (
    Cancelled,
    Control,
    DeadLetterNotice,
    EnqueueOptions,
    Enqueuer,
    FlowJob,
    FlowProducer,
    JobContext,
    JobRegistry,
    Permanent,
    RateLimited,
    Retryable,
    RetryPolicy,
    RuntimeSettings,
    Worker,
)
from workers.deadletter import DeadLetters
from workers.keys import Keys
from workers.maintenance import Maintenance
from workers.presence import Presence
from workers.scripts import Scripts

DECLARING = (
    "enqueue", "flow", "control", "dlq_requeue", "dlq_remove", "report", "presence", "keep", "forget",
    "orphans", "recover", "step",
)  # fmt: skip

registry = JobRegistry()


class Item(BaseModel):
    n: int


@registry.job("dk.work", queue="dk")
def work(payload: Item, ctx: JobContext) -> int:
    ctx.progress({"done": payload.n})
    ctx.log(f"item {payload.n}")
    if payload.n < 0:
        raise Permanent(f"item {payload.n} cannot be done")
    return payload.n


@registry.job("dk.part", queue="dk-parts")
def part(payload: Item, ctx: JobContext) -> int:
    return payload.n


@registry.job("dk.kept", queue="dk-kept", keep_completed=3, keep_failed=3, retry=RetryPolicy(max_attempts=1))
def kept(payload: Item, ctx: JobContext) -> int:
    if payload.n < 0:
        raise Permanent("kept among the dead letters")
    return payload.n


# housekeeping told to keep fewer than the step keeps: keep.lua has something to trim
TIGHTER = [["dk.kept", "completed", 1, False], ["dk.kept", "failed", 1, False]]


def housekeeping(redis: Redis, settings: RuntimeSettings) -> Maintenance:
    keys = Keys(settings.key_prefix)
    letters = DeadLetters(redis, settings)
    scripts = Scripts(redis, keys.lua_keyspace)
    return Maintenance(redis, keys, letters, "w", logging.getLogger("test"), kept=TIGHTER, scripts=scripts)


def test_the_lists_cover_every_runtime_script() -> None:
    assert sorted(DECLARING) == sorted(RUNTIME_SCRIPTS)


def test_runtime_scripts_declare_every_key_they_touch(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, job_events=True)
    enqueuer = Enqueuer(redis, settings)
    control = Control(redis, settings)
    letters = DeadLetters(redis, settings)
    flows = FlowProducer(redis, settings, enqueuer=enqueuer)
    keys = Keys(settings.key_prefix)
    with watching(redis_url) as seen:
        enqueuer.enqueue(work, Item(n=1))
        enqueuer.enqueue(work, Item(n=2), options=EnqueueOptions(priority=3))
        enqueuer.enqueue(work, Item(n=3), options=EnqueueOptions(at_front=True))
        enqueuer.enqueue(work, Item(n=4), options=EnqueueOptions(idempotency_key="k4"))
        enqueuer.enqueue(work, Item(n=4), options=EnqueueOptions(idempotency_key="k4"))  # the same job
        enqueuer.enqueue_many(work, [Item(n=-1), Item(n=-2), Item(n=-3)])
        later = enqueuer.enqueue(work, Item(n=5), options=EnqueueOptions(delay=3600))
        waiting = enqueuer.enqueue(work, Item(n=6), options=EnqueueOptions(priority=9))
        flow = flows.add(
            FlowJob(work, Item(n=7), children=[FlowJob(part, Item(n=8)), FlowJob(part, Item(n=9))])
        )
        cancelled_child = flow.job_ids[1]

        assert control.cancel(later).action == "removed"  # a scheduled job
        assert control.cancel(waiting).action == "removed"  # a prioritized one
        assert control.cancel(cancelled_child).action == "removed"  # a flow's child: fails its parent
        assert control.cancel("no-such-job").action == "missing"
        assert control.cancel(later).action == "nothing"  # already canceled

        run_burst(redis, registry, settings, queues=["dk", "dk-parts"])  # progress, log, dead letters
        dead = letters.ids("dk")
        assert len(dead) == 4 and flow.id in dead  # the three that fail, and the flow's parent
        dead.remove(flow.id)  # requeued, the parent would run: its failed child is no longer held against it
        assert sorted(letters.requeue(dead[:2])) == sorted(dead[:2])
        run_burst(redis, registry, settings, queues=["dk"])  # dead-lettered again, at the list's end
        assert letters.remove("dk", [dead[2]]) == 1
        time.sleep(0.01)  # every dead letter is older than now by a few milliseconds
        assert letters.purge("dk", older_than=0) == 3
        wait_until(lambda: redis.llen(keys.queue("dk.dlq")) == 0, message="the dead letters removed")

        enqueuer.enqueue_many(kept, [Item(n=n) for n in (1, 2, 3, -1, -2, -3)])
        run_burst(redis, registry, settings, queues=["dk-kept"])
        assert (
            redis.zcard(keys.kept("completed", "dk.kept")) == 3 and redis.llen(keys.queue("dk-kept.dlq")) == 3
        )
        redis.delete(keys.maintenance_lock)  # the burst worker did its housekeeping already
        assert housekeeping(redis, settings).run(time.time())
        assert (
            redis.zcard(keys.kept("completed", "dk.kept")) == 1 and redis.llen(keys.queue("dk-kept.dlq")) == 1
        )

    calls = Calls(seen, redis)
    ran = {call.script for call in seen if call.commands}
    missing = {f"workers/{name}" for name in DECLARING if name != "recover"} - ran  # recover: below
    assert not missing, f"not exercised: {missing}"
    undeclared = calls.undeclared([f"workers/{name}" for name in DECLARING])
    assert not undeclared, "keys touched but not declared in KEYS:\n" + "\n".join(
        f"  {script}: {command} {key}" for script, command, key in undeclared[:40]
    )


def test_a_removal_by_age_that_meets_a_changed_head_reads_it_again(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The age removal declares the ids it read at the list's head; when someone removed the
    head meanwhile, the script touches nothing undeclared, says so, and the next read goes on."""
    settings = make_settings(redis_url)
    enqueuer = Enqueuer(redis, settings)
    letters = DeadLetters(redis, settings)
    for n in range(-5, 0):
        enqueuer.enqueue(work, Item(n=n))
    run_burst(redis, registry, settings, queues=["dk"])
    dead = letters.ids("dk")
    assert len(dead) == 5
    time.sleep(0.01)
    read = redis.lrange
    raced: list[str] = []

    def lrange_then_race(key: str, start: int, end: int) -> list[bytes]:
        head: list[bytes] = read(key, start, end)
        if not raced:  # another operator deletes the first dead letter right after this read
            raced.append(head[0].decode())
            assert letters.remove("dk", [raced[0]]) == 1
        return head

    monkeypatch.setattr(redis, "lrange", lrange_then_race)
    with watching(redis_url) as seen:
        assert letters.purge("dk", older_than=0) == 4
    assert raced == [dead[0]] and redis.llen("rq:queue:dk.dlq") == 0
    declared = sorted(len(call.declared) for call in seen if call.script == "workers/dlq_remove")
    # the removal by id (3 + 2 keys); by age: 5 ids read, the head changed, 4 read again, then none
    assert declared == [3, 5, 11, 13]
    assert Calls(seen, redis).undeclared(["workers/dlq_remove"]) == []


def test_a_trim_that_meets_a_job_it_was_not_told_of_stops_there(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Housekeeping declares the oldest kept jobs it read; one older still, added after that read,
    stops the trim untouched, and the next run trims it with the rest."""
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    Enqueuer(redis, settings).enqueue_many(kept, [Item(n=n) for n in (1, 2, 3)])
    run_burst(redis, registry, settings, queues=["dk-kept"])
    index = keys.kept("completed", "dk.kept")
    sneaked = Enqueuer(redis, settings).enqueue(kept, Item(n=4), options=EnqueueOptions(queue="elsewhere"))
    cleaner = housekeeping(redis, settings)
    read = cleaner._kept_keys

    def read_then_race() -> list[str | bytes]:
        declared = read()
        redis.zadd(index, {sneaked: 0})  # the oldest now, and not among the keys read
        return declared

    monkeypatch.setattr(cleaner, "_kept_keys", read_then_race)
    redis.delete(keys.maintenance_lock)
    with watching(redis_url) as seen:
        assert cleaner.run(time.time())
    assert redis.zcard(index) == 4 and redis.exists(keys.job(sneaked))  # nothing trimmed
    assert Calls(seen, redis).undeclared(["workers/keep"]) == []
    monkeypatch.undo()
    redis.delete(keys.maintenance_lock)
    assert cleaner.run(time.time())
    assert redis.zcard(index) == 1  # the sneaked one, then the two oldest of the rest


def test_forgetting_silent_workers_declares_what_it_touches(redis: Redis, redis_url: str) -> None:
    """Three silent workers: one holding nothing is forgotten; one whose run still owns its job is
    kept, the run put back in the running registry it was missing from; one whose run was settled
    meanwhile loses the run and is forgotten. A worker that falls silent after the read is left."""
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    owned = Enqueuer(redis, settings).enqueue(work, Item(n=1))
    settled = Enqueuer(redis, settings).enqueue(work, Item(n=2))
    redis.hset(keys.job(owned), mapping={"status": "started", "execution": "t.1"})
    redis.hset(keys.job(settled), mapping={"status": "finished", "execution": ""})
    for name, queues in (("idle.1", "dk"), ("busy.1", "dk,other"), ("done.1", "dk")):
        redis.zadd(keys.live_workers, {name: 0})
        redis.hset(keys.rq_worker(name), mapping={"queues": queues})
        redis.sadd(keys.RQ_WORKERS, keys.rq_worker(name))
        for queue in queues.split(","):
            redis.sadd(keys.rq_workers_by_queue(queue), keys.rq_worker(name))
    redis.zadd(keys.live_workers, {b"\xff\xfe": 0})  # a name no worker has: garbage, forgotten too
    redis.sadd(keys.inflight("busy.1"), f"{owned}:t.1")
    redis.sadd(keys.inflight("done.1"), f"{settled}:t.2")
    reaper = Worker(redis, registry, settings).reaper
    read = reaper._silent

    def read_then_fall_silent() -> tuple[list[object], list[str]]:
        found = read()
        redis.zadd(keys.live_workers, {"late.1": 0})  # silent now, not when read: judged next time
        return found

    reaper._silent = read_then_fall_silent  # type: ignore[method-assign]
    with watching(redis_url) as seen:
        reaper.forget()
    assert {w.decode() for w in redis.zrange(keys.live_workers, 0, -1)} == {"busy.1", "late.1"}
    assert redis.zscore(keys.wip("dk"), f"{owned}:t.1") is not None  # repaired for recovery
    assert redis.smembers(keys.RQ_WORKERS) == {keys.rq_worker("busy.1").encode()}
    assert not redis.exists(keys.inflight("done.1"))
    assert Calls(seen, redis).undeclared(["workers/forget"]) == []


@pytest.mark.parametrize("garbled", ["job", "parent"])
def test_a_cancel_reads_garbage_and_still_answers(redis: Redis, redis_url: str, garbled: str) -> None:
    """The keys a cancel reads first hold something else than a job: it answers, never loops."""
    settings = make_settings(redis_url)
    flow = FlowProducer(redis, settings).add(FlowJob(work, Item(n=1), children=[FlowJob(part, Item(n=2))]))
    parent, child = flow.job_ids
    victim = child if garbled == "job" else parent
    redis.delete(f"rq:job:{victim}")
    redis.set(f"rq:job:{victim}", "garbage")
    result = Control(redis, settings).cancel(child)
    if garbled == "job":
        assert result.action == "missing"
    else:  # the child is canceled; its parent, unreadable, is left as it is
        assert result.action == "removed" and redis.get(f"rq:job:{parent}") == b"garbage"


def test_a_worker_leaving_with_a_run_it_did_not_read_stays_for_recovery(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaving, a worker declares the runs it read in its in-flight set; one that appears after the
    read counts as unsettled (its job is not looked at), so the worker is left for recovery."""
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    presence = Presence(redis, Scripts(redis, keys.lua_keyspace), keys, "w.1", ["dk"], ttl=5, heartbeat=1)
    presence.register()
    job_id = Enqueuer(redis, settings).enqueue(work, Item(n=1))
    read = redis.smembers

    def read_then_claim(key: str) -> set[bytes]:
        members: set[bytes] = read(key)
        redis.hset(keys.job(job_id), "execution", "t.1")
        redis.sadd(keys.inflight("w.1"), f"{job_id}:t.1")
        return members

    monkeypatch.setattr(redis, "smembers", read_then_claim)
    with watching(redis_url) as seen:
        assert presence.leave() is False
    assert redis.zscore(keys.live_workers, "w.1") == 0  # silent since the epoch: recovered at once
    assert Calls(seen, redis).undeclared(["workers/presence"]) == []
    monkeypatch.undo()
    redis.hset(keys.job(job_id), "execution", "")  # settled meanwhile: the next leave is clean
    assert presence.leave() is True and not redis.zscore(keys.live_workers, "w.1")


recovering = JobRegistry(on_dead_letter="dk.hook")


@recovering.job("dk.retried", queue="dk-rec", retry=RetryPolicy(max_attempts=3))
def retried(payload: Item, ctx: JobContext) -> int:
    return payload.n


@recovering.job("dk.doomed", queue="dk-rec", retry=RetryPolicy(max_attempts=1))
def doomed(payload: Item, ctx: JobContext) -> int:
    raise Permanent("doomed")


@recovering.job("dk.whole", queue="dk-parents")
def whole(payload: Item, ctx: JobContext) -> int:
    return payload.n


@recovering.job("dk.hook", queue="dk-hooks")
def hook(payload: DeadLetterNotice, ctx: JobContext) -> None:
    return None


def _claim_for_ghost(redis: Redis, keys: Keys, n: int, *, started: bool) -> list[str]:
    """Claim ``n`` jobs of dk-rec for a worker that is not running (as a dead one leaves them)."""
    scripts = Scripts(redis, keys.lua_keyspace)
    ctx = {"worker": "ghost.1", "token": f"ghost{int(started)}", "seq": 0, "claim_ttl_ms": 60_000,
           "defer_s": 1.0, "result_ttl": 500, "budget": 100, "dlq_retention": 3600,
           "dlq_max_length": 100}  # fmt: skip
    plan = {"ctx": ctx, "started": [], "done": [], "failed": [], "released": [], "queues": ["dk-rec"], "n": n}
    rows = scripts.run("step", plan)[0]
    if started:
        begun = [[row[0].decode(), row[1].decode(), row[2], time.time()] for row in rows]
        scripts.run("step", {**plan, "started": begun, "n": 0})
    return [row[0].decode() for row in rows]


def test_recovering_a_dead_workers_runs_declares_what_it_touches(redis: Redis, redis_url: str) -> None:
    """A dead worker's runs: one retried, one dead-lettered (its hook job enqueued, the dead-letter
    cap removing the oldest), a flow's child dead-lettered (its parent released, failed), one that
    never started put back; orphans.lua and recover.lua touch only the keys they were told of."""
    settings = make_settings(redis_url, dlq_max_length=2)
    keys = Keys(settings.key_prefix)
    enqueuer = Enqueuer(redis, settings)
    old = enqueuer.enqueue_many(doomed, [Item(n=-1), Item(n=-2)])
    run_burst(redis, recovering, settings, queues=["dk-rec"])
    assert sorted(redis.lrange(keys.queue("dk-rec.dlq"), 0, -1)) == sorted(i.encode() for i in old)
    first = enqueuer.enqueue(retried, Item(n=1))
    second = enqueuer.enqueue(doomed, Item(n=2))
    flow = FlowProducer(redis, settings, enqueuer=enqueuer).add(
        FlowJob(whole, Item(n=3), children=[FlowJob(doomed, Item(n=4))])
    )
    child = flow.job_ids[1]
    assert _claim_for_ghost(redis, keys, 3, started=True) == [first, second, child]
    unstarted = enqueuer.enqueue(retried, Item(n=5))
    assert _claim_for_ghost(redis, keys, 1, started=False) == [unstarted]
    now = time.time()
    redis.zadd(keys.live_workers, {"ghost.1": now - 100})
    redis.hset(keys.liveness, "last_beat", now)  # the others beat on: no grace
    reaper = Worker(redis, recovering, settings, queues=["dk-rec"]).reaper
    redis.delete(keys.recovery_lock)  # the burst worker's own round may have taken it
    with watching(redis_url) as seen:
        assert reaper.run() == 4
    state = {job_id: redis.hget(keys.job(job_id), "status") for job_id in (first, second, child, unstarted)}
    assert state == {first: b"queued", second: b"failed", child: b"failed", unstarted: b"queued"}
    assert redis.hget(keys.job(flow.id), "status") == b"queued"  # released, to be dead-lettered
    assert redis.llen(keys.queue("dk-hooks")) == 2 + 2  # a notice for each dead letter, the old two's too
    assert sorted(redis.lrange(keys.queue("dk-rec.dlq"), 0, -1)) == sorted([second.encode(), child.encode()])
    assert not redis.exists(keys.job(old[0])) and not redis.exists(keys.job(old[1]))  # the cap
    calls = Calls(seen, redis)
    ran = {call.script for call in seen if call.commands}
    assert {"workers/orphans", "workers/recover"} <= ran
    assert calls.undeclared(["workers/orphans", "workers/recover"]) == []


stepping = JobRegistry()
_tries: dict[str, int] = {}


def _first_try(key: str) -> bool:
    _tries[key] = _tries.get(key, 0) + 1
    return _tries[key] == 1


@stepping.job("dk.once", queue="dk-step", idempotency_key=lambda p: str(p.n), rate_limit="1000/s")
def once(payload: Item, ctx: JobContext) -> int:
    ctx.effects.incrby("dk:counted", 1)
    return payload.n


@stepping.job("dk.slowed", queue="dk-step")
def slowed(payload: Item, ctx: JobContext) -> int:
    if _first_try(f"slowed{payload.n}"):
        raise RateLimited("busy", delay=0.05)
    return payload.n


@stepping.job("dk.again", queue="dk-step", retry=RetryPolicy(max_attempts=3))
def again(payload: Item, ctx: JobContext) -> int:
    if _first_try(f"again{payload.n}"):
        raise Retryable("not yet", delay=0.05)
    return payload.n


@stepping.job("dk.stopped", queue="dk-step")
def stopped(payload: Item, ctx: JobContext) -> int:
    raise Cancelled()


@stepping.job("dk.child", queue="dk-step-parts", idempotency_key=lambda p: "child")
def child(payload: Item, ctx: JobContext) -> int:
    return payload.n


def _drain(redis: Redis, settings: RuntimeSettings, ids: list[str], queues: list[str]) -> dict[str, bytes]:
    """Burst workers until every job of ``ids`` has ended (retries and throttles come back later)."""
    keys = Keys(settings.key_prefix)

    def ended() -> dict[str, bytes] | None:
        run_burst(redis, stepping, settings, queues=queues)
        state = {job_id: redis.hget(keys.job(job_id), "status") or b"" for job_id in ids}
        return state if all(s in (b"finished", b"failed", b"canceled") for s in state.values()) else None

    return wait_until(ended, message="every job ended")


def test_the_steps_rarer_paths_declare_what_they_touch(redis: Redis, redis_url: str) -> None:
    """Effect keys (a duplicate found done at the claim), a type's rate limit, a job told to slow
    down, a retry that comes back from the scheduled registry, a job that cancels itself, Redis
    effects, a job hash without its type (the claim asks for it), a flow's child found done: the
    step touches only keys its call declared."""
    _tries.clear()
    settings = make_settings(redis_url, job_events=True)
    keys = Keys(settings.key_prefix)
    enqueuer = Enqueuer(redis, settings)
    with watching(redis_url) as seen:
        ids = [enqueuer.enqueue(once, Item(n=1))]
        ids += [enqueuer.enqueue(once, Item(n=1))]  # the same effect key: a duplicate
        ids += [enqueuer.enqueue(slowed, Item(n=2)), enqueuer.enqueue(again, Item(n=3))]
        ids += [enqueuer.enqueue(stopped, Item(n=4)), enqueuer.enqueue(once, Item(n=5))]
        redis.hdel(keys.job(ids[-1]), "job_type")  # as an older or foreign producer writes it
        first = FlowProducer(redis, settings, enqueuer=enqueuer).add(
            FlowJob(once, Item(n=6), children=[FlowJob(child, Item(n=7))])
        )
        queues = ["dk-step", "dk-step-parts"]
        state = _drain(redis, settings, ids + first.job_ids, queues)
        # a second flow whose child's effect is done already: the child ends as a duplicate at once
        second = FlowProducer(redis, settings, enqueuer=enqueuer).add(
            FlowJob(once, Item(n=8), children=[FlowJob(child, Item(n=9))])
        )
        state.update(_drain(redis, settings, second.job_ids, queues))
    assert state[ids[4]] == b"canceled"
    assert all(state[i] == b"finished" for i in ids[:4] + ids[5:] + first.job_ids + second.job_ids)
    assert redis.get("dk:counted") == b"4"  # n=1 once (its twin a duplicate), 5, 6 and 8
    duplicate_of = redis.hget(keys.job(second.job_ids[1]), "ran")
    assert duplicate_of is None  # the child found its effect done: it never ran
    calls = Calls(seen, redis)
    assert "workers/step" in {call.script for call in seen if call.commands}
    undeclared = calls.undeclared(["workers/step"])
    assert not undeclared, "keys touched but not declared in KEYS:\n" + "\n".join(
        f"  {script}: {command} {key}" for script, command, key in undeclared[:40]
    )


@pytest.mark.parametrize("line", ["list", "prioritized"])
def test_a_claim_that_meets_a_head_it_did_not_read_puts_it_back(
    redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    """Another producer puts jobs at the head of the line between the worker's read of the heads
    and its step: the step puts back what it was not told of, in order, touches nothing
    undeclared, and the next round claims them; every job runs once."""
    _tries.clear()
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    enqueuer = Enqueuer(redis, settings)
    options = EnqueueOptions(priority=5) if line == "prioritized" else EnqueueOptions()
    ahead = EnqueueOptions(priority=1) if line == "prioritized" else EnqueueOptions(at_front=True)
    ids = [enqueuer.enqueue(once, Item(n=n), options=options) for n in range(10, 14)]
    worker = Worker(redis, stepping, settings, queues=["dk-step"], concurrency=1)
    read = worker.step_keys.claim_keys
    raced: list[str] = []

    def read_then_race(want: int, scheduled: bool) -> list[Any]:
        declared = read(want, scheduled)
        if not raced:
            raced.extend(enqueuer.enqueue(once, Item(n=n), options=ahead) for n in (20, 21))
        return declared

    monkeypatch.setattr(worker.step_keys, "claim_keys", read_then_race)
    grown: list[int] = []
    note = worker.step_keys.claimed

    def noting(wanted: int, got: int, exhausted: bool) -> None:
        note(wanted, got, exhausted)
        grown.append(worker.step_keys.extra)

    monkeypatch.setattr(worker.step_keys, "claimed", noting)
    with watching(redis_url) as seen:
        worker.run(burst=True)
    every = ids + raced
    assert all(redis.hget(keys.job(i), "status") == b"finished" for i in every)
    assert all(redis.hget(keys.job(i), "attempt") == b"1" for i in every)
    assert grown[0] == 8 and grown[-1] == 4  # further ahead after the miss, then back
    assert Calls(seen, redis).undeclared(["workers/step"]) == []
    ran = [int(redis.hget(keys.job(i), "ended_at") is not None) for i in every]
    assert sum(ran) == len(every)


def test_a_user_limited_to_key_patterns_claims_without_sort(redis: Redis, redis_url: str) -> None:
    """Redis 7 refuses SORT's GET patterns to a user without access to every key: the worker reads
    the heads of its queues with LRANGE, ZRANGE and HMGET instead, and claims as before."""
    major = int(redis.info("server")["redis_version"].split(".")[0])
    settings = make_settings(redis_url)
    enqueuer = Enqueuer(redis, settings)
    ids = [enqueuer.enqueue(once, Item(n=n)) for n in range(30, 33)]
    ids.append(enqueuer.enqueue(once, Item(n=33), options=EnqueueOptions(priority=2)))
    redis.acl_setuser("patterns", enabled=True, passwords=["+pw"], keys=["~rq:*", "~chumon:*", "~dk:*"],
                      channels=["*"], commands=["+@all"])  # fmt: skip
    try:
        client = Redis.from_url(redis_url, username="patterns", password="pw")
        worker = Worker(client, stepping, settings, queues=["dk-step"])
        worker.run(burst=True)
        keys = Keys(settings.key_prefix)
        assert all(redis.hget(keys.job(i), "status") == b"finished" for i in ids)
        assert worker.step_keys.sort is (major < 7)  # Redis 6.2 lets such a user SORT ... GET
        client.close()
    finally:
        redis.acl_deluser("patterns")


def test_an_idle_worker_claims_the_job_its_signal_names_without_reading_the_head(
    redis: Redis, redis_url: str
) -> None:
    """Jobs enqueued one at a time, each after the last ended: the queue's signal names the job
    (its id and effect key), and the woken worker claims it with those keys declared, reading no
    head (no SORT); a batch put in line at once is read as before. Nothing undeclared either way."""
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    enqueuer = Enqueuer(redis, settings)
    with worker_thread(redis, stepping, settings, queues=["dk-step"]):
        first = enqueuer.enqueue(once, Item(n=40))
        wait_until(lambda: redis.hget(keys.job(first), "status") == b"finished", message="the first job")
        time.sleep(0.2)  # the worker is idle again
        redis.config_resetstat()
        with watching(redis_url) as seen:
            ids = []
            for n in range(41, 47):
                options = EnqueueOptions(priority=3) if n == 44 else EnqueueOptions()
                ids.append(enqueuer.enqueue(once, Item(n=n), options=options))  # each with an effect key
                wait_until(lambda: redis.hget(keys.job(ids[-1]), "status") == b"finished", message="a job")
            sorts_alone = int(redis.info("commandstats").get("cmdstat_sort", {}).get("calls", 0))
            batch = enqueuer.enqueue_many(once, [Item(n=n) for n in range(50, 60)])
            wait_until(
                lambda: all(redis.hget(keys.job(i), "status") == b"finished" for i in batch),
                message="the batch",
            )
    assert sorts_alone == 0
    assert int(redis.info("commandstats")["cmdstat_sort"]["calls"]) > 0  # the batch: heads read
    assert Calls(seen, redis).undeclared(["workers/step", "workers/enqueue"]) == []


def test_a_job_scheduled_for_later_tells_an_idle_worker_when_instead_of_waking_it(
    redis: Redis, redis_url: str
) -> None:
    """The queue's signal says when the scheduled job is due: the idle worker makes no step call
    to learn it (none could claim anything), and runs the job once it is due."""
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    enqueuer = Enqueuer(redis, settings)
    worker = Worker(redis, stepping, settings, queues=["dk-step"])
    worker.listener.block_ms = 60_000  # no safety poll during the test
    steps: list[int] = []
    step = worker._step

    def counting(want: int) -> tuple[int, bool]:
        steps.append(want)
        return step(want)

    worker._step = counting  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        first = enqueuer.enqueue(once, Item(n=70))
        wait_until(lambda: redis.hget(keys.job(first), "status") == b"finished", message="the first job")
        wait_until(lambda: not worker._pending and not worker._owned, message="the worker idle")
        time.sleep(0.1)  # its last step's reply is in
        before = len(steps)
        later = enqueuer.enqueue(once, Item(n=71), options=EnqueueOptions(delay=2.0))
        time.sleep(0.5)
        assert len(steps) == before  # told when, not woken
        wait_until(lambda: redis.hget(keys.job(later), "status") == b"finished", timeout=15, message="due")
        assert len(steps) > before
    finally:
        worker.stop()
        thread.join(10)
