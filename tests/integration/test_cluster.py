"""The job runtime on a real Redis Cluster of the test's own (tests/clusterproc.py).

A ``redis+cluster://`` URL picks the cluster layout (workers/keys.py): each queue's keys carry its
hash tag, queues spread over the primaries, one worker per queue. What the runtime promises on one
Redis is checked here from the raw records: every start of every job (``starts:{q}``), every
effect (``effects:{q}``, applied with the completion), every hook run. The order flow, flows and
rq's tools do not run on a cluster yet: they refuse it before writing anything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from chumon import cli
from chumon.settings import load
from producer import Producer
from tests.apps import clustered
from tests.clusterproc import SLOTS, ClusterNodes
from tests.support import make_settings, wait_until, worker_thread
from workers import EnqueueOptions, Worker
from workers.connection import RedisOptions, connect
from workers.control import Control
from workers.crew import Crew, served_queues
from workers.deadletter import DeadLetters
from workers.enqueue import Enqueuer
from workers.errors import ServerUnsupported
from workers.keys import shard_tags, sub_queues

TALLY = clustered.registry.get("c.tally")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterNodes]:
    with ClusterNodes(primaries=3, replicas=1) as nodes:
        yield nodes


def _all_keys(cluster: ClusterNodes) -> set[bytes]:
    """Every key of every live primary (earlier tests' keys may expire meanwhile: compare sets)."""
    found: set[bytes] = set()
    for server in cluster.alive():
        with server.client() as client:
            if client.info("replication")["role"] == "master":
                found.update(client.scan_iter(count=1000))
    return found


def spread_queues(prefix: str, primaries: int = 3) -> list[str]:
    """One queue name per primary: the first names whose slot falls in each primary's range."""
    per = SLOTS // primaries
    found: dict[int, str] = {}
    n = 0
    while len(found) < primaries:
        name = f"{prefix}{n}"
        found.setdefault(min(key_slot(name.encode()) // per, primaries - 1), name)
        n += 1
    return [found[i] for i in range(primaries)]


def _tallies(client: Any, queue: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(clustered.effects(queue)).items()}


def _starts(client: Any, queue: str) -> list[int]:
    return [int(entry.split(b":")[0]) for entry in client.lrange(clustered.starts(queue), 0, -1)]


def test_the_runtime_drains_queues_on_every_primary_once_each(
    cluster: ClusterNodes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(cluster.url)
    redis = connect(cluster.url, settings.redis)
    queues = spread_queues("drain")
    assert len({cluster.primary_of(q).port for q in queues}) == 3  # a queue on every primary
    enqueuer = Enqueuer(redis, settings)
    per_queue = 60
    for queue in queues:
        opts = EnqueueOptions(queue=queue)
        enqueuer.enqueue_many(TALLY, [{"n": n} for n in range(per_queue)], options=opts)
        enqueuer.enqueue(TALLY, {"n": 0}, options=opts)  # the same effect key: a duplicate, no run
    doomed = [
        enqueuer.enqueue(clustered.doomed, {"n": n}, options=EnqueueOptions(queue=queues[0])) for n in (1, 2)
    ]
    stray = enqueuer.enqueue(clustered.stray, {"n": 0}, options=EnqueueOptions(queue=queues[1]))

    workers = [Worker(redis, clustered.registry, settings, queues=[q]) for q in [*queues, "hooks"]]
    stats = Crew(workers).run(burst=True)
    # the hooks of the last dead letters may be relayed after the hooks worker's burst ended
    Worker(redis, clustered.registry, settings, queues=["hooks"]).run(burst=True)

    for queue in queues:
        assert _tallies(redis, queue) == dict.fromkeys(range(per_queue), 1)  # each effect once
        assert sorted(_starts(redis, queue)) == list(range(per_queue))  # and each job ran once
    assert stats["done"] == 3 * per_queue
    dead = DeadLetters(redis, settings)
    assert sorted(dead.ids(queues[0])) == sorted(doomed)
    assert dead.ids(queues[1]) == [stray]
    refused = dead.show(stray)
    assert refused is not None and "not in the slot of queue" in (refused.last_error or "")
    assert redis.get("stray-counter") is None  # the refused effect wrote nothing
    assert sorted(x.decode() for x in redis.lrange(clustered.HOOKS_SEEN, 0, -1)) == sorted([*doomed, stray])
    for server in cluster.alive():  # every primary holds queue keys
        with server.client() as client:
            if client.info("replication")["role"] == "master":
                assert client.dbsize() > 0

    monkeypatch.setenv("REDIS_URL", cluster.url)
    load.cache_clear()
    try:
        capsys.readouterr()
        assert cli.main(["queues", "--json"]) == 0
        rows = {row["queue"]: row for row in json.loads(capsys.readouterr().out)}
        for queue in queues:
            assert rows[queue]["queued"] == 0 and rows[queue]["started"] == 0
        assert rows[queues[0] + ".dlq"]["queued"] == 2
        assert cli.main(["dlq", "requeue", doomed[0]]) == 0
        assert dead.ids(queues[0]) == [doomed[1]]
        assert redis.llen(f"rq:{{{queues[0]}}}:queue:{queues[0]}") == 1  # back on its own queue
        capsys.readouterr()
        assert cli.main(["job", "show", "--json", stray]) == 0  # found by id alone, in its slot
        assert json.loads(capsys.readouterr().out)["queue"] == queues[1]
    finally:
        load.cache_clear()
    redis.close()


def test_a_split_queue_spreads_over_every_primary_and_keeps_deduplicating(
    cluster: ClusterNodes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(cluster.url, queue_split={"hot": 3})
    redis = connect(cluster.url, settings.redis)
    subs = sub_queues("hot", 3)
    assert len({cluster.primary_of(sub).port for sub in subs}) == 3  # one sub-queue per primary
    enqueuer = Enqueuer(redis, settings)
    opts = EnqueueOptions(queue="hot")
    total = 90
    enqueuer.enqueue_many(TALLY, [{"n": n} for n in range(total)], options=opts)
    enqueuer.enqueue_many(TALLY, [{"n": n} for n in range(10)], options=opts)  # same keys again
    doomed = enqueuer.enqueue(clustered.doomed, {"n": 7}, options=opts)
    groups = served_queues(["hot"], settings.queue_split, cluster=True)
    assert groups == [[sub] for sub in subs]
    Crew([Worker(redis, clustered.registry, settings, queues=group) for group in groups]).run(burst=True)

    seen: dict[int, int] = {}
    for sub in subs:
        tallies = _tallies(redis, sub)
        assert tallies, f"sub-queue {sub} got no job"
        assert sorted(_starts(redis, sub)) == sorted(tallies)  # each job of it ran once
        for n, count in tallies.items():
            seen[n] = seen.get(n, 0) + count
    assert seen == dict.fromkeys(range(total), 1)  # each effect once, its duplicates included

    monkeypatch.setenv("REDIS_URL", cluster.url)
    monkeypatch.setenv("CHUMON_QUEUE_SPLIT", "hot=3")
    load.cache_clear()
    try:
        capsys.readouterr()
        assert (
            cli.main(["dlq", "list", "--queue", "hot", "--json"]) == 0
        )  # the queue's name: all its sub-queues
        assert [entry["id"] for entry in json.loads(capsys.readouterr().out)] == [doomed]
    finally:
        load.cache_clear()
    redis.close()


def test_a_sharded_queue_runs_jobs_named_to_a_shard_and_jobs_that_name_none(cluster: ClusterNodes) -> None:
    """A registry's sharded queue has a copy per shard; its workers serve every copy, and the queue
    itself, so a job enqueued without naming a shard still runs (it would wait for ever)."""
    from workers import JobRegistry

    registry = JobRegistry()
    registry.include(clustered.registry)
    registry.shard("alpha")
    settings = make_settings(cluster.url, shards=2)
    redis = connect(cluster.url, settings.redis)
    tags = shard_tags(2)
    groups = served_queues(["alpha"], {}, cluster=True, sharded=registry.sharded, shards=2)
    assert groups == [[f"alpha@{tags[0]}"], [f"alpha@{tags[1]}"], ["alpha"]]
    enqueuer = Enqueuer(redis, settings)
    enqueuer.enqueue_many(TALLY, [{"n": n} for n in range(5)], options=EnqueueOptions(queue="alpha"))
    for k, tag in enumerate(tags):
        named = EnqueueOptions(queue=f"alpha@{tag}")
        enqueuer.enqueue_many(TALLY, [{"n": n} for n in range(10 * (k + 1), 10 * (k + 1) + 5)], options=named)
    Crew([Worker(redis, registry, settings, queues=group) for group in groups]).run(burst=True)
    assert _tallies(redis, "alpha") == dict.fromkeys(range(5), 1)
    assert _tallies(redis, f"alpha@{tags[0]}") == dict.fromkeys(range(10, 15), 1)
    assert _tallies(redis, f"alpha@{tags[1]}") == dict.fromkeys(range(20, 25), 1)
    redis.close()


def test_garbage_in_a_relay_is_quarantined_and_holds_up_nothing(cluster: ClusterNodes) -> None:
    """A relay holding an unreadable id, a job key that is not a hash and a job whose origin names
    no queue, before a good hook job: the good one is moved, the others quarantined, the worker on."""
    import logging

    from workers.keys import Keys, relay_queue
    from workers.relay import Relay

    settings = make_settings(cluster.url)
    redis = connect(cluster.url, settings.redis)
    queue = spread_queues("junk")[0]
    keys = Keys(settings.key_prefix, queue)
    line = keys.queue(relay_queue(queue))
    enqueuer = Enqueuer(redis, settings)
    good = enqueuer.spec(clustered.hook, {"job_id": "j", "job_type": None, "queue": queue, "payload": None,
                                          "reason": "test", "attempts": 1}, EnqueueOptions())  # fmt: skip
    good_fields = dict(zip(good["fields"][::2], good["fields"][1::2], strict=True))
    redis.hset(keys.job("good"), mapping=good_fields)
    redis.set(keys.job("string"), "not a hash")
    redis.hset(keys.job("nowhere"), mapping={**good_fields, "origin": "no such {queue}"})
    redis.rpush(line, b"\xff\xfe", "string", "nowhere", "good")
    moved = Relay(redis, keys, enqueuer, queue, logging.getLogger("test")).run()
    assert moved == 1 and redis.llen(line) == 0
    hooks = Keys(settings.key_prefix, "hooks")
    assert redis.lrange(hooks.queue("hooks"), 0, -1).count(b"good") == 1  # on its own queue, in its slot
    quarantined = [fields[b"id"] for _, fields in redis.xrange(keys.quarantine)]
    assert quarantined == [b"\xff\xfe", b"string", b"nowhere"]
    index = keys.queue_index  # garbage in the cluster's queue index: skipped, never a failure
    redis.sadd(index, b"\xff", "no such {queue}", queue)
    assert (
        queue in Control(redis, settings).layout.queues()
        and "no such {queue}" not in Control(redis, settings).layout.queues()
    )
    enqueuer.enqueue(clustered.doomed, {"n": 1}, options=EnqueueOptions(queue=queue))
    Worker(redis, clustered.registry, settings, queues=[queue]).run(
        burst=True
    )  # the index's garbage: no harm
    assert queue in DeadLetters(redis, settings).origins()
    redis.srem(index, b"\xff", "no such {queue}")
    redis.close()


def test_a_flow_runs_within_one_group_and_one_across_slots_is_refused(cluster: ClusterNodes) -> None:
    """A flow's queues share a slot when they share a group (name@group): the parent runs once,
    after its children, and sees their results; a flow over two slots is refused, nothing written."""
    from tests.apps import flows as app
    from workers.flows import FlowJob, FlowProducer

    settings = make_settings(cluster.url)
    redis = connect(cluster.url, settings.redis)
    producer = FlowProducer(redis, settings)
    before = _all_keys(cluster)
    with pytest.raises(ValueError, match="must share one slot"):
        producer.add(FlowJob(app.total, {"label": "x"}, children=[
            FlowJob(app.part, {"n": 1}, options=EnqueueOptions(queue="a")),
        ]), flow_id="across")  # fmt: skip
    assert _all_keys(cluster) <= before  # nothing written
    parents, parts = EnqueueOptions(queue="parents@rep"), EnqueueOptions(queue="a@rep")
    flow = producer.add(FlowJob(app.total, {"label": "all"}, options=parents, children=[
        FlowJob(app.part, {"n": 1}, options=parts), FlowJob(app.part, {"n": 2}, options=parts),
    ]), flow_id="report")  # fmt: skip
    assert flow.created
    groups = served_queues(["a@rep", "parents@rep"], {}, cluster=True)
    assert groups == [["a@rep", "parents@rep"]]  # one slot, one worker
    with worker_thread(redis, app.registry, settings, queues=groups[0]):
        wait_until(lambda: redis.lrange(app.TOTAL_RUNS, 0, -1), timeout=30, message="the parent to run")
    assert [x.decode() for x in redis.lrange(app.TOTAL_RUNS, 0, -1)] == ["report"]  # the parent once
    assert sorted(x.decode() for x in redis.lrange(app.PART_RUNS, 0, -1)) == ["report-0", "report-1"]
    seen = json.loads(redis.get(app.SEEN + "report"))
    assert [(c["id"], c["status"], c["result"]) for c in seen] == [
        ("report-0", "finished", {"n": 1}), ("report-1", "finished", {"n": 2}),
    ]  # fmt: skip
    redis.close()


def test_the_exporter_reads_every_queue_slot(cluster: ClusterNodes) -> None:
    from chumon.exporter import registry as exporter_registry
    from tests.integration.test_metrics_and_logs import samples, value

    settings = make_settings(cluster.url)
    redis = connect(cluster.url, settings.redis)
    queues = spread_queues("gauge")
    enqueuer = Enqueuer(redis, settings)
    enqueuer.enqueue(clustered.doomed, {"n": 1}, options=EnqueueOptions(queue=queues[0]))
    Worker(redis, clustered.registry, settings, queues=[queues[0]]).run(burst=True)
    for n, queue in enumerate(queues):
        enqueuer.enqueue_many(TALLY, [{"n": i} for i in range(n + 1)], options=EnqueueOptions(queue=queue))
    found = samples(exporter_registry(redis, settings.model_copy(update={"dlq_alert_threshold": 0})))
    assert [value(found, "chumon_queue_depth", queue=q) for q in queues] == [1, 2, 3]
    assert value(found, "chumon_dead_letters", queue=queues[0]) == 1
    assert value(found, "chumon_dead_letter_alert", queue=queues[0]) == 1
    assert value(found, "chumon_orders", status="CONFIRMED") == 0  # every shard's read model, read
    redis.close()


def test_job_events_are_read_from_their_queue_slot(
    cluster: ClusterNodes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.events import JobEvents

    settings = make_settings(cluster.url, job_events=True)
    redis = connect(cluster.url, settings.redis)
    queue = spread_queues("told")[1]
    job_id = Enqueuer(redis, settings).enqueue(TALLY, {"n": 1}, options=EnqueueOptions(queue=queue))
    Worker(redis, clustered.registry, settings, queues=[queue]).run(burst=True)
    events = [(e.event, e.job_id) for e in JobEvents(redis, settings, queue=queue).latest()]
    assert events == [("queued", job_id), ("active", job_id), ("completed", job_id)]
    monkeypatch.setenv("REDIS_URL", cluster.url)
    monkeypatch.setenv("CHUMON_JOB_EVENTS", "1")
    load.cache_clear()
    try:
        capsys.readouterr()
        assert cli.main(["job", "events", "--job", job_id, "--json"]) == 0  # its queue found by the id
        assert [e["event"] for e in json.loads(capsys.readouterr().out)] == ["queued", "active", "completed"]
        assert cli.main(["job", "events"]) == 2  # which slot's stream? it says so
        assert "give --queue or --job" in capsys.readouterr().err
    finally:
        load.cache_clear()
    redis.close()


def test_plain_urls_and_commands_not_built_for_it_refuse_the_cluster_before_writing(
    cluster: ClusterNodes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _all_keys(cluster)
    node = cluster.servers[0]
    monkeypatch.setenv("REDIS_URL", node.url)  # a node, with a plain URL: every command refuses it
    load.cache_clear()
    try:
        place = ["order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada"]
        assert cli.main([*place, "--item", "TEA:1", "--ship-to", "12 Analytical Lane"]) == 2
        assert cli.main(["stock", "set", "TEA", "5"]) == 2
        with pytest.raises(ServerUnsupported, match="use a redis\\+cluster://"):
            Producer.connect()
    finally:
        load.cache_clear()
    with pytest.raises(ServerUnsupported, match="use a redis\\+cluster://"):
        Worker(node.client(), clustered.registry, make_settings(node.url)).run(burst=True)
    monkeypatch.setenv("REDIS_URL", cluster.url)  # the cluster: what is not built for it says so
    load.cache_clear()
    try:
        assert cli.main(["scheduler", "--burst"]) == 2  # rq-scheduler reads rq's own keys
        assert cli.main(["schedules", "list"]) == 2
    finally:
        load.cache_clear()
    assert _all_keys(cluster) <= before  # nothing written, on any node
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 4 and all("Redis Cluster" in line for line in err), err


def test_one_worker_per_queue_of_its_own_slot(cluster: ClusterNodes) -> None:
    settings = make_settings(cluster.url)
    redis = connect(cluster.url, settings.redis)
    with pytest.raises(ValueError, match="one worker serves the queues of one slot"):
        Worker(redis, clustered.registry, settings, queues=spread_queues("pair", 2))
    redis.close()


def test_a_killed_primary_is_replaced_by_its_replica_with_its_data(cluster: ClusterNodes) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.alive()[0].port)
    keys = [f"fixture:{n}" for n in range(300)]
    for n, key in enumerate(keys):
        client.set(key, n)
    primaries = {cluster.primary_of(key).port for key in keys}
    assert len(primaries) == 3  # the keys spread over every primary
    victim = cluster.primary_of(keys[0])
    with victim.client() as node:
        assert node.execute_command("WAIT", 1, 5000) == 1  # its replica holds every write
    cluster.kill(victim)
    cluster.wait_for(lambda: cluster.serving(keys[0]) not in (None, victim), "the replica's promotion")
    cluster.wait_for(lambda: cluster.healthy(replicated=False), "the cluster to be ok again")
    after = RedisCluster(host="127.0.0.1", port=cluster.alive()[0].port)
    assert [after.get(key) for key in keys] == [str(n).encode() for n in range(len(keys))]
    client.close()
    after.close()


def test_a_primary_killed_mid_run_loses_no_job_and_doubles_no_effect() -> None:
    with ClusterNodes(primaries=3, replicas=1) as cluster:
        settings = make_settings(cluster.url, redis=RedisOptions(replicas_ack=1, replicas_timeout_ms=2000))
        redis = connect(cluster.url, settings.redis)
        queues = spread_queues("fail")
        enqueuer = Enqueuer(redis, settings)
        per_queue = 120
        for queue in queues:  # acknowledged once a replica holds them (WAIT): a failover keeps them
            enqueuer.enqueue_many(TALLY, [{"n": n, "ms": 25} for n in range(per_queue)],
                                  options=EnqueueOptions(queue=queue))  # fmt: skip
        crew = Crew([Worker(redis, clustered.registry, settings, queues=[q], concurrency=2) for q in queues])
        runner = threading.Thread(target=crew.run, name="crew")
        runner.start()
        try:
            victim_queue = queues[0]
            victim = cluster.primary_of(victim_queue)
            wait_until(lambda: len(_tallies(redis, victim_queue)) >= 10, timeout=30, message="work under way")
            done_before = len(_tallies(redis, victim_queue))
            cluster.kill(victim)
            assert done_before <= per_queue - 20  # killed mid-run: most of its queue still to do
            cluster.wait_for(lambda: cluster.serving(victim_queue) not in (None, victim), "the promotion")

            def all_done() -> bool:
                try:
                    return all(len(_tallies(redis, q)) == per_queue for q in queues)
                except Exception:  # the cluster client during the failover
                    return False

            wait_until(all_done, timeout=90, message="every job's effect")
            for queue in queues:
                tallies = _tallies(redis, queue)
                assert tallies == dict.fromkeys(range(per_queue), 1), {
                    n: c for n, c in tallies.items() if c != 1
                }
                assert set(_starts(redis, queue)) == set(range(per_queue))  # retries may start twice

            def idle(q: str) -> bool:
                return redis.zcard(f"rq:{{{q}}}:wip:{q}") == 0 and redis.llen(f"rq:{{{q}}}:queue:{q}") == 0

            wait_until(
                lambda: all(idle(q) for q in queues), timeout=30, message="nothing left queued or running"
            )
        finally:
            crew.stop()
            runner.join(30)
            redis.close()
        assert not runner.is_alive()
