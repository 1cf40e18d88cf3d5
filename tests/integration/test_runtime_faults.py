"""The runtime against a real Redis holding what it should not: garbage in every key it reads,
fields no tool would write, runs whose worker vanished, a silence of every heartbeat.

Each test writes the damage by hand, as an attacker or a broken tool would, then checks that
the worker serves on, that what cannot be run is dead-lettered or quarantined with the reason,
and that nothing else is touched.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis import Redis

from chumon.cli import main as chumon
from tests.apps import sample
from tests.support import make_settings, run_burst, wait_until, worker_thread
from workers import EnqueueOptions, Enqueuer, RuntimeSettings, Worker, load_job
from workers.deadletter import DeadLetters
from workers.keys import Keys
from workers.scripts import Scripts

KEYS = Keys()


def claim_for(redis: Redis, worker: str, *, n: int = 1, started: bool = True) -> list[Any]:
    """Claim jobs of queue q for a worker that is not running (as a dead one left them)."""
    scripts = Scripts(redis, KEYS.lua_keyspace)
    ctx = {"worker": worker, "token": "ghost", "seq": 0, "claim_ttl_ms": 60_000, "defer_s": 1.0,
           "result_ttl": 500, "budget": 100, "dlq_retention": 3600, "dlq_max_length": 100}  # fmt: skip
    plan = {"ctx": ctx, "started": [], "done": [], "failed": [], "released": [], "queues": ["q"], "n": n}
    rows = scripts.run("step", plan)[0]
    if started:
        begun = [[row[0].decode(), row[1].decode(), row[2], time.time()] for row in rows]
        scripts.run("step", {**plan, "started": begun, "n": 0})
    return rows


def status(redis: Redis, job_id: str) -> str | None:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else None


# -- runs whose worker is gone ------------------------------------------------------------------------
def test_a_run_with_no_live_owner_is_found_from_the_registry_alone(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """The worker's own bookkeeping is gone (it deregistered, or its in-flight set was deleted):
    the running registry and the job hash are evidence enough."""
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "orphan"})
    claim_for(redis, "ghost.1", started=False)
    redis.delete(KEYS.inflight("ghost.1"), KEYS.live_workers)
    assert status(redis, job_id) == "started"
    with worker_thread(redis, sample.registry, settings):
        wait_until(lambda: status(redis, job_id) == "finished", message="the orphan to run")
    info = load_job(redis, KEYS, job_id)
    assert info.attempt == 1 and info.failures == []  # it never began: no attempt was used
    assert redis.zcard("rq:wip:q") == 0


def test_a_started_orphan_counts_an_attempt_and_is_retried_at_once(
    redis: Redis, settings: RuntimeSettings
) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "crashed"})
    claim_for(redis, "ghost.2")
    with worker_thread(redis, sample.registry, settings):
        wait_until(lambda: status(redis, job_id) == "finished", message="the retry")
    info = load_job(redis, KEYS, job_id)
    assert info.attempt == 2 and [f["exc_type"] for f in info.failures] == ["WorkerLost"]
    assert "ghost.2" in info.failures[0]["message"]


def test_a_job_that_keeps_killing_workers_before_it_starts_costs_attempts(
    redis: Redis, settings: RuntimeSettings
) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "poison"})
    redis.hset(KEYS.job(job_id), "lost", 3)  # three unstarted runs of it were lost already
    claim_for(redis, "ghost.3", started=False)
    worker = Worker(redis, sample.registry, settings)
    assert worker.reaper.run() == 1
    info = load_job(redis, KEYS, job_id)
    assert (
        info.failures[0]["exc_type"] == "WorkerLost" and "may kill its worker" in info.failures[0]["message"]
    )


def test_nothing_is_recovered_while_the_liveness_grace_holds(redis: Redis, settings: RuntimeSettings) -> None:
    """Every heartbeat stopped at once (Redis was frozen or restarted): the first scan after the
    silence opens a grace instead of presuming every worker dead."""
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "alive after all"})
    claim_for(redis, "busy.1")
    now = time.time()
    redis.zadd(KEYS.live_workers, {"busy.1": now - 100})
    redis.hset(KEYS.liveness, "last_beat", now - 100)
    worker = Worker(redis, sample.registry, settings)
    assert worker.reaper.run() == 0
    assert status(redis, job_id) == "started"
    assert float(redis.hget(KEYS.liveness, "grace_until")) > now
    redis.hset(KEYS.liveness, mapping={"grace_until": time.time() - 1, "last_beat": time.time()})
    redis.delete(KEYS.recovery_lock)  # the grace is over and heartbeats flow again: busy.1 stayed silent
    assert worker.reaper.run() == 1
    assert status(redis, job_id) == "queued"


def test_a_worker_dead_before_an_outage_is_recovered_during_its_grace(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """Its heartbeats had stopped long before everyone's did: the outage explains nothing about it."""
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "dead before"})
    claim_for(redis, "dead.1")
    now = time.time()
    redis.zadd(KEYS.live_workers, {"dead.1": now - 100})
    redis.hset(KEYS.liveness, "last_beat", now - 50)  # the others beat until 50 s ago
    worker = Worker(redis, sample.registry, settings)
    assert worker.reaper.run() == 1
    assert float(redis.hget(KEYS.liveness, "grace_until")) > now  # the grace is open, for the others
    assert status(redis, job_id) == "queued"


# -- fields no tool would write ----------------------------------------------------------------------
BAD_FIELDS = {
    "retry": (b"\xff\xfe", "retry field is not UTF-8"),
    "effect_key": (b"t.echo:\xff", "effect_key field is not UTF-8"),
    "result_ttl": ("²", "result_ttl is not a whole number"),
    "timeout": ("nan", "timeout is not a number"),
    "attempt": ("many", "attempt count is not a whole number"),
}


def test_unreadable_fields_dead_letter_their_job_and_the_batch_runs_on(
    redis: Redis, settings: RuntimeSettings
) -> None:
    enqueuer = Enqueuer(redis, settings)
    good = enqueuer.enqueue_many(sample.echo, [{"text": f"good {i}"} for i in range(5)])
    bad = {}
    for field, (value, _reason) in BAD_FIELDS.items():
        bad[field] = enqueuer.enqueue(sample.echo, {"text": field})
        redis.hset(KEYS.job(bad[field]), field, value)
    nested = enqueuer.enqueue(sample.echo, {"text": "deep"})
    redis.hset(KEYS.job(nested), "data", "[" * 100_000)
    redis.rpush("rq:queue:q", b"\xff\xfe-not-utf8", "a:b", "a.b")
    redis.hset("rq:job:a:b", mapping={"data": "x", "status": "queued"})
    worker = run_burst(redis, sample.registry, settings, concurrency=4)
    assert all(status(redis, job_id) == "finished" for job_id in good)
    dead = {info.id: info for info in DeadLetters(redis, settings).entries("q")}
    for field, (_value, reason) in BAD_FIELDS.items():
        info = dead[bad[field]]
        assert info.failures[0]["exc_type"] == "MalformedJob" and reason in info.failures[0]["message"], field
    assert "nested too deeply" in dead[nested].failures[0]["message"]
    assert worker.stats["quarantined"] == 3
    reasons = [entry[b"reason"] for _id, entry in redis.xrange(KEYS.quarantine)]
    assert all(b"not 1-128 letters" in r for r in reasons)
    assert redis.zcard("rq:wip:q") == 0  # nothing stranded as started


def test_garbled_registry_members_are_skipped_by_workers_and_commands(
    redis: Redis, settings: RuntimeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    redis.sadd("rq:queues", b"\xff\xfe", "rq:queue:q")
    redis.zadd(KEYS.live_workers, {b"\xff\xfe": 0, "ghost\n": 0})
    job_id = Enqueuer(redis, settings).enqueue(sample.permanent, {"text": "dead letter"})
    with worker_thread(redis, sample.registry, settings):
        wait_until(lambda: status(redis, job_id) == "failed", message="the dead letter")
        time.sleep(3 * settings.recovery_interval)  # recovery rounds over the garbled members
    environment = {"REDIS_URL": settings.redis_url}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        from chumon.settings import load

        load.cache_clear()
        assert chumon(["queues", "--json"]) == 0
        assert chumon(["dlq", "list", "--json"]) == 0
        load.cache_clear()
    out = capsys.readouterr().out
    assert '"queue": "q"' in out and job_id in out


RUNTIME_OWN = {"chumon:workers", "chumon:liveness", "chumon:quarantine", "chumon:dlq:dropped",
               "chumon:recovery:lock", "chumon:maintenance:lock", "chumon:idem:enqueue:t.echo:e"}  # fmt: skip


@pytest.mark.parametrize(
    "key",
    [
        "rq:queue:q", "rq:scheduled:q", "rq:wip:q", "rq:finished:q", "rq:failed:q", "rq:queue:q.dlq",
        "rq:queues", "rq:workers", "rq:workers:q", "chumon:workers", "chumon:signal:q",
        "chumon:liveness", "chumon:quarantine", "chumon:dlq:dropped", "chumon:recovery:lock",
        "chumon:maintenance:lock", "chumon:idem:effect:t.keyed:k", "chumon:idem:enqueue:t.echo:e",
        "chumon:paused", "chumon:prioritized:q",
    ],
)  # fmt: skip
def test_garbage_in_any_key_the_runtime_reads_never_stops_a_worker(
    redis: Redis, settings: RuntimeSettings, key: str
) -> None:
    """Each key the runtime reads, filled with a value of the wrong type: the worker serves on
    (the other queue's work runs), and the key is reported, not overwritten."""
    garbage = "a string" if not key.endswith(("lock", ":k", ":e")) else None
    if garbage:
        redis.set(key, garbage)
    else:
        redis.rpush(key, "a list where a string should be")
    enqueuer = Enqueuer(redis, settings)
    elsewhere = enqueuer.enqueue(sample.echo, {"text": "elsewhere"}, options=EnqueueOptions(queue="q2"))
    attempts = [
        lambda: enqueuer.enqueue(sample.echo, {"text": "here"}),
        lambda: enqueuer.enqueue(sample.keyed, {"key": "k"}),
        lambda: enqueuer.enqueue(sample.echo, {"text": "e"}, options=EnqueueOptions(idempotency_key="e")),
        lambda: enqueuer.enqueue(sample.permanent, {"text": "to the dead letters"}),
    ]
    for attempt in attempts:
        try:
            attempt()
        except Exception as exc:  # an enqueue into a garbage queue is refused, saying why
            assert "hold something else" in str(exc) or "WRONGTYPE" in str(exc), exc
    with worker_thread(redis, sample.registry, settings, queues=["q", "q2", "hooks"]) as worker:
        wait_until(lambda: status(redis, elsewhere) == "finished", message="work on the other queue")
        time.sleep(3 * settings.recovery_interval)  # rounds of recovery and housekeeping over the garbage
        assert worker.heartbeat.is_alive()
    if garbage and key not in RUNTIME_OWN:  # the runtime's own keys may be replaced; shared ones never
        assert redis.get(key) == garbage.encode()  # shared with rq's tools: reported and left alone


def test_a_dead_workers_run_is_recovered_when_rq_queues_is_garbage_or_gone(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """rq's index of queues is shared with rq's tools: if it holds something else than a set (or
    was deleted), each worker still recovers its own queues."""
    for garbage in (True, False):
        job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "orphan"})
        claim_for(redis, "ghost.1")
        redis.delete(KEYS.inflight("ghost.1"), KEYS.live_workers, "rq:queues")
        if garbage:
            redis.set("rq:queues", "garbage")
        with worker_thread(redis, sample.registry, settings):
            wait_until(lambda j=job_id: status(redis, j) == "finished", message="the orphan recovered")
        redis.delete("rq:queues")


def test_keys_garbled_while_a_worker_runs_are_reported_and_left_alone(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """Keys the step writes without checking their type first (the finished registry, rq:queues,
    the signal stream), garbled under a running worker: every job still finishes, the worker
    serves on, and the garbage is left as it was. (The worker's in-flight set is its own: its
    heartbeat replaces garbage there.)"""
    enqueuer = Enqueuer(redis, settings)
    with worker_thread(redis, sample.registry, settings, name="garbled") as worker:
        first = enqueuer.enqueue(sample.echo, {"text": "before"})
        wait_until(lambda: status(redis, first) == "finished", message="a first job")
        garbled = ["rq:finished:q", "rq:queues", "chumon:signal:q"]
        for key in garbled:
            redis.delete(key)
            redis.set(key, "garbage")
        ids = enqueuer.enqueue_many(sample.echo, [{"text": str(i)} for i in range(20)])
        wait_until(lambda: all(status(redis, i) == "finished" for i in ids), message="every job after it")
        assert worker.heartbeat.is_alive()
    for key in garbled:
        assert redis.get(key) == b"garbage"  # reported, never overwritten by a run


# -- bounded work ----------------------------------------------------------------------------------------
def test_no_script_call_holds_redis_long_whatever_the_queues_hold(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """20,000 jobs behind one held effect key, then a 60,000-job bulk enqueue: no call reaches a
    second in SLOWLOG (the unbounded versions took seconds; a call takes milliseconds, and the bound
    is generous because a loaded machine can preempt Redis in the middle of any command). The
    budget itself is checked exactly by test_a_step_call_touches_no_more_ids_than_its_budget."""
    previous = redis.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    redis.config_set("slowlog-log-slower-than", 1_000_000)
    redis.slowlog_reset()
    try:
        enqueuer = Enqueuer(redis, settings)
        holder = enqueuer.enqueue(sample.keyed, {"key": "hot", "sleep": 3.0})
        with worker_thread(redis, sample.registry, settings, concurrency=2) as worker:
            wait_until(lambda: status(redis, holder) == "started", message="the holder to start")
            enqueuer.enqueue_many(sample.keyed, [{"key": "hot"} for _ in range(20_000)])
            wait_until(
                lambda: worker.stats["deferred"] + worker.stats["duplicate"] >= 20_000,
                timeout=120,
                message="every copy met once (deferred while the holder ran, or finished as a duplicate)",
            )
        enqueuer.enqueue_many(sample.echo, [{"text": str(i)} for i in range(60_000)])
        slow = [entry for entry in redis.slowlog_get(128) if b"EVALSHA" in entry["command"][:8]]
        assert slow == [], [(e["duration"], e["command"][:60]) for e in slow]
    finally:
        redis.config_set("slowlog-log-slower-than", previous)


# -- effects committed with completion ------------------------------------------------------------------
def test_effects_apply_once_with_completion_and_never_in_part(
    redis: Redis, settings: RuntimeSettings
) -> None:
    enqueuer = Enqueuer(redis, settings)
    ok = enqueuer.enqueue(sample.deposit, {"account": "a", "amount": 100, "reference": "r1"})
    again = enqueuer.enqueue(sample.deposit, {"account": "a", "amount": 100, "reference": "r1"})
    failing = enqueuer.enqueue(sample.deposit, {"account": "b", "amount": 5, "reference": "r2", "fail": True})
    redis.set("test:balances:wrongtype", "x")
    refused = enqueuer.enqueue(
        sample.deposit, {"account": "c", "amount": 7, "reference": "r3", "also": "test:balances:wrongtype"}
    )
    with worker_thread(redis, sample.registry, settings):
        wait_until(lambda: status(redis, again) == "finished", message="the second delivery")
        wait_until(lambda: status(redis, refused) == "failed", message="the refused job")
    assert redis.hgetall("test:balances") == {b"a": b"100"}  # once, and nothing of the others
    assert status(redis, ok) == "finished"
    assert load_job(redis, KEYS, failing).failures[-1]["exc_type"] == "RuntimeError"
    info = load_job(redis, KEYS, refused)
    assert info.status == "failed" and info.failures[0]["exc_type"] == "EffectsRefused"
    assert not redis.hexists("test:balances", "c")  # its first, valid effect was not applied either


def test_effects_may_not_write_the_runtimes_own_keys(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(
        sample.deposit, {"account": "x", "amount": 1, "reference": "r4", "also": "rq:queue:q"}
    )
    run_burst(redis, sample.registry, settings)
    info = load_job(redis, KEYS, job_id)
    assert info.status == "failed" and info.failures[0]["exc_type"] == "EffectError"
    assert "runtime's own keys" in info.failures[0]["message"]


def test_policies_written_by_hand_cannot_overflow_the_backoff(
    redis: Redis, settings: RuntimeSettings
) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.always_fails, {"text": "x"})
    redis.hset(KEYS.job(job_id), "retry", json.dumps({"max_attempts": 4, "factor": 1e200, "base": 1e300}))
    worker = run_burst(redis, sample.registry, settings)  # the bad policy is ignored: the default applies
    assert worker.stats["retried"] == 1 and status(redis, job_id) == "scheduled"


# -- liveness --------------------------------------------------------------------------------------------
def test_an_idle_worker_keeps_heartbeating(redis: Redis, settings: RuntimeSettings) -> None:
    """Idle and busy alike: its liveness entry stays fresh by the server's clock, round after round."""
    with worker_thread(redis, sample.registry, settings) as worker:
        wait_until(lambda: redis.zscore(KEYS.live_workers, worker.name), message="registration")
        first = redis.zscore(KEYS.live_workers, worker.name)
        wait_until(
            lambda: redis.zscore(KEYS.live_workers, worker.name) > first + 2 * settings.heartbeat_interval,
            message="heartbeats while idle",
        )
        seconds, micros = redis.time()
        assert seconds + micros / 1e6 - redis.zscore(KEYS.live_workers, worker.name) < settings.worker_ttl
        assert not worker.heartbeat.failing


def test_a_server_too_old_is_refused_in_one_line(
    redis: Redis,
    settings: RuntimeSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from redis import Redis as Client

    real_info = Client.info
    monkeypatch.setattr(
        Client,
        "info",
        lambda self, *a, **k: (
            {"redis_version": "6.0.16"} if a[:1] == ("server",) else real_info(self, *a, **k)
        ),
    )
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    from chumon.settings import load

    load.cache_clear()
    try:
        assert chumon(["queues"]) == 2
        with pytest.raises(Exception, match=r"Redis 6\.0\.16 is too old: chumon needs Redis 6\.2 or later"):
            Worker(redis, sample.registry, settings).run(burst=True)
    finally:
        load.cache_clear()
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "chumon: Redis 6.0.16 is too old: chumon needs Redis 6.2 or later (or Valkey 7.2 or later)"
    ]


def test_the_exporter_reads_garbage_as_zero_and_never_fails_a_scrape(
    redis: Redis, settings: RuntimeSettings
) -> None:
    from chumon.exporter import RedisCollector

    Enqueuer(redis, settings).enqueue(sample.echo, {"text": "counted"})
    redis.sadd("rq:queues", b"\xff", "rq:queue:broken", "rq:queue:broken.dlq")
    redis.set("rq:queue:broken", "not a list")
    redis.set("rq:queue:broken.dlq", "not a list")
    redis.set(KEYS.dlq_dropped, "not a hash")
    redis.rpush(KEYS.quarantine, "not a stream")
    redis.rpush("rq:queue:q", b"\xff\xfe")
    metrics = {m.name: m for m in RedisCollector(redis, settings).collect()}
    depth = {s.labels["queue"]: s.value for s in metrics["chumon_queue_depth"].samples}
    assert depth == {"broken": 0.0, "q": 2.0}
    assert metrics["chumon_quarantined"].samples[0].value == 0.0


def test_a_queue_index_of_another_type_lists_no_queue_and_fails_nothing(
    redis: Redis, settings: RuntimeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """rq:queues holding a string: the exporter scrapes, `chumon queues` and `dlq list` answer,
    housekeeping runs; each reads it as an empty index and says so."""
    from chumon.exporter import RedisCollector
    from chumon.settings import load

    Enqueuer(redis, settings).enqueue(sample.permanent, {"text": "dead letter"})
    redis.delete("rq:queues")
    redis.set("rq:queues", "garbage")
    metrics = {m.name: m for m in RedisCollector(redis, settings).collect()}
    assert metrics["chumon_queue_depth"].samples == []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", settings.redis_url)
        load.cache_clear()
        assert chumon(["queues", "--json"]) == 0
        assert chumon(["dlq", "list", "--json"]) == 0
        load.cache_clear()
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == []
    with worker_thread(redis, sample.registry, settings, queues=["q", "hooks"]) as worker:
        wait_until(lambda: worker.stats["dead"] == 1, message="the dead letter")
        redis.delete(KEYS.maintenance_lock)  # the worker's own round may have taken it
        assert worker.maintenance.run(time.time())  # housekeeping over the garbage
    assert redis.get("rq:queues") == b"garbage"


def test_a_cluster_node_or_url_is_refused_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis Cluster node reached with a plain URL would take a script's first write and refuse
    the next (MOVED, CROSSSLOT): the worker, the command line and the producer refuse it at start,
    in one line that names the cluster URL to use. A cluster URL whose nodes do not answer is a
    Redis error (exit 3), not a traceback."""
    from chumon.devredis import free_port
    from chumon.settings import load
    from producer import Producer
    from tests.redisproc import RedisServer
    from workers.errors import ServerUnsupported

    node = RedisServer(appendonly=False, extra=["--cluster-enabled", "yes"])
    while node.port > 55535:  # a cluster node's bus port is its port + 10,000
        node.dir.cleanup()
        node = RedisServer(appendonly=False, extra=["--cluster-enabled", "yes"])
    with node:
        client = node.client()
        monkeypatch.setenv("REDIS_URL", node.url)
        load.cache_clear()
        try:
            assert chumon(["queues"]) == 2
            with pytest.raises(ServerUnsupported, match="Redis Cluster node"):
                Worker(client, sample.registry, make_settings(node.url)).run(burst=True)
            with pytest.raises(ServerUnsupported, match="Redis Cluster node"):
                Producer.connect()
            monkeypatch.setenv("REDIS_URL", f"redis+cluster://127.0.0.1:{free_port()}")
            load.cache_clear()
            assert chumon(["queues"]) == 3  # a cluster URL whose seed nodes do not answer
        finally:
            load.cache_clear()
        assert client.dbsize() == 0  # nothing written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "Redis Cluster node: use a redis+cluster://" in err[0], err
    assert "no seed node of the cluster answered" in err[1], err


@pytest.mark.parametrize(
    ("garbled", "options"),
    [("rq:queue:q", EnqueueOptions()), ("rq:scheduled:q", EnqueueOptions(delay=60)),
     ("chumon:prioritized:q", EnqueueOptions(priority=5))],
)  # fmt: skip
def test_an_enqueue_is_refused_only_by_the_key_its_job_goes_to(
    redis: Redis, settings: RuntimeSettings, garbled: str, options: EnqueueOptions
) -> None:
    """Garbage in the one key a job would go to refuses it with nothing written; garbage in the
    queue's other keys does not stand in the way of a job that does not go there."""
    redis.set(garbled, "garbage")
    enqueuer = Enqueuer(redis, settings)
    before = set(redis.keys("*"))
    with pytest.raises(Exception, match="something else"):
        enqueuer.enqueue(sample.echo, {"text": "refused"}, options=options)
    assert set(redis.keys("*")) == before  # nothing written
    every = (EnqueueOptions(), EnqueueOptions(delay=60), EnqueueOptions(priority=5))
    for other in (o for o in every if o != options):
        job_id = enqueuer.enqueue(sample.echo, {"text": "taken"}, options=other)
        assert status(redis, job_id) in ("queued", "scheduled")
    assert redis.get(garbled) == b"garbage"
