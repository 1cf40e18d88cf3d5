"""Flows: a parent that runs once, after all its children ended, and reads their results; created
atomically and idempotently; a failed child fails the parent or is ignored, as its policy says."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rq.registry import DeferredJobRegistry
from rq.serializers import JSONSerializer

from chumon import cli
from chumon.settings import load
from tests.apps import flows as app
from tests.support import WorkerProcess, wait_until, worker_thread
from workers import Control, EnqueueOptions, FlowJob, FlowProducer, RuntimeSettings
from workers.codec import parse_iso
from workers.deadletter import DeadLetters
from workers.flows import FlowRefused
from workers.joblog import set_sink
from workers.jobview import load_job

QUEUES = ["a", "b", "c", "parents", "hooks"]


@pytest.fixture
def cli_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For tests that call cli.main, which configures the process's logging: put it back after."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    load.cache_clear()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    load.cache_clear()
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


def part(n: int, queue: str = "a", **extra: Any) -> FlowJob:
    payload = {"n": n, **{k: v for k, v in extra.items() if k in ("seconds", "fail")}}
    return FlowJob(
        app.part,
        payload,
        options=EnqueueOptions(queue=queue),
        on_failure=extra.get("on_failure", "fail_parent"),
    )


def status(redis: Redis, job_id: str) -> str | None:
    raw = redis.hget(f"rq:job:{job_id}", "status")
    return raw.decode() if raw else None


def seen(redis: Redis, parent: str) -> list[dict[str, Any]]:
    raw = redis.get(app.SEEN + parent)
    return json.loads(raw) if raw else []


def runs(redis: Redis, key: str) -> list[str]:
    return [raw.decode() for raw in redis.lrange(key, 0, -1)]


def test_the_parent_runs_once_after_all_its_children_on_several_queues(redis: Redis, redis_url: str) -> None:
    """Children on three queues, one of them a parent itself, served by two worker processes."""
    flows = FlowProducer(redis, RuntimeSettings(redis_url=redis_url))
    flow = flows.add(
        FlowJob(app.total, {"label": "all"}, children=[
            part(1, "a", seconds=0.3),
            part(2, "b"),
            FlowJob(app.total, {"label": "nested"}, options=EnqueueOptions(queue="c"), children=[
                part(10, "c", seconds=0.2), part(20, "a"),
            ]),
        ]),
        flow_id="report-1",
    )  # fmt: skip
    assert flow.created and flow.job_ids == ["report-1", "report-1-0", "report-1-1", "report-1-2",
                                             "report-1-2-0", "report-1-2-1"]  # fmt: skip
    assert status(redis, "report-1") == "deferred" and status(redis, "report-1-2") == "deferred"
    assert redis.zscore("rq:deferred:parents", "report-1")  # rq's deferred registry, as rq scores it
    flow_app = "tests.apps.flows:registry"
    workers = [WorkerProcess(redis_url, "--queues", "a", "b", app=flow_app),
               WorkerProcess(redis_url, "--queues", "c", "parents", app=flow_app)]  # fmt: skip
    try:
        wait_until(lambda: status(redis, "report-1") == "finished", timeout=60, message="the root to finish")
    finally:
        for worker in workers:
            worker.stop()
    assert sorted(runs(redis, app.TOTAL_RUNS)) == ["report-1", "report-1-2"]  # each parent once
    assert sorted(runs(redis, app.PART_RUNS)) == ["report-1-0", "report-1-1", "report-1-2-0", "report-1-2-1"]
    assert [(c["id"], c["status"], c["result"]) for c in seen(redis, "report-1")] == [
        ("report-1-0", "finished", {"n": 1}),
        ("report-1-1", "finished", {"n": 2}),
        ("report-1-2", "finished", 30),
    ]
    assert load_job(redis, flows.keys, "report-1").result == 33
    started = parse_iso(redis.hget("rq:job:report-1", "started_at").decode())
    for child in ("report-1-0", "report-1-1", "report-1-2"):
        assert parse_iso(redis.hget(f"rq:job:{child}", "ended_at").decode()) <= started
    assert not redis.zcard("rq:deferred:parents") and not redis.zcard("rq:deferred:c")


def test_a_child_whose_worker_is_killed_is_recovered_and_the_parent_still_runs_once(
    redis: Redis, redis_url: str
) -> None:
    flows = FlowProducer(redis, RuntimeSettings(redis_url=redis_url))
    flows.add(FlowJob(app.total, {"label": "k"}, children=[part(1, seconds=1.5), part(2, "b", seconds=1.5)]),
              flow_id="killed")  # fmt: skip
    flow_app = "tests.apps.flows:registry"
    doomed = WorkerProcess(redis_url, "--queues", "a", "b", app=flow_app)
    try:
        wait_until(lambda: status(redis, "killed-0") == "started" and status(redis, "killed-1") == "started",
                   timeout=30, message="both children running")  # fmt: skip
    finally:
        doomed.kill()
    rescuer = WorkerProcess(redis_url, "--queues", "a", "b", "parents", app=flow_app)
    try:
        wait_until(lambda: status(redis, "killed") == "finished", timeout=60, message="the parent to run")
    finally:
        rescuer.stop()
    assert runs(redis, app.TOTAL_RUNS) == ["killed"]
    assert sorted(runs(redis, app.PART_RUNS)) == ["killed-0", "killed-1"]  # the killed runs never ended
    assert load_job(redis, flows.keys, "killed").result == 3


def test_the_same_flow_id_twice_creates_the_flow_once(redis: Redis, settings: RuntimeSettings) -> None:
    flows = FlowProducer(redis, settings)
    tree = FlowJob(app.total, {"label": "once"}, children=[part(1), part(2, "b")])
    first = flows.add(tree, flow_id="once")
    keys_after_first = sorted(redis.keys("*"))
    second = flows.add(tree, flow_id="once")
    assert first.created and not second.created and second.id == "once"
    assert sorted(redis.keys("*")) == keys_after_first and redis.llen("rq:queue:a") == 1
    with worker_thread(redis, app.registry, settings, queues=QUEUES):
        wait_until(lambda: status(redis, "once") == "finished", message="the parent to run")
        flows.add(tree, flow_id="once")  # again, while the root exists: nothing
    assert runs(redis, app.TOTAL_RUNS) == ["once"] and sorted(runs(redis, app.PART_RUNS)) == [
        "once-0",
        "once-1",
    ]


def test_a_dead_child_dead_letters_its_parent_by_default(redis: Redis, settings: RuntimeSettings) -> None:
    flows = FlowProducer(redis, settings)
    flows.add(FlowJob(app.total, {"label": "x"}, children=[part(1, fail=True), part(2, "b", seconds=0.2)]),
              flow_id="doomed")  # fmt: skip
    with worker_thread(redis, app.registry, settings, queues=QUEUES):
        wait_until(
            lambda: app.NOTICES and "doomed" in runs(redis, app.NOTICES), message="the parent's notice"
        )
        wait_until(lambda: status(redis, "doomed-1") == "finished", message="the other child")
    assert runs(redis, app.TOTAL_RUNS) == []  # the parent never ran
    parent = load_job(redis, flows.keys, "doomed")
    assert parent.status == "failed" and parent.dead_lettered_at
    assert parent.last_error == "ChildFailed: child doomed-0 was dead-lettered"
    assert "doomed" in DeadLetters(redis, settings).ids("parents")
    assert sorted(runs(redis, app.NOTICES)) == ["doomed", "doomed-0"]  # the hook heard of both


def test_an_ignored_failure_lets_the_parent_run_and_see_it(redis: Redis, settings: RuntimeSettings) -> None:
    flows = FlowProducer(redis, settings)
    children = [part(1, fail=True, on_failure="ignore"), part(2, "b")]
    flows.add(FlowJob(app.total, {"label": "x"}, children=children), flow_id="tolerant")
    with worker_thread(redis, app.registry, settings, queues=QUEUES):
        wait_until(lambda: status(redis, "tolerant") == "finished", message="the parent to run")
    assert [(c["status"], c["result"]) for c in seen(redis, "tolerant")] == [
        ("failed", None),
        ("finished", {"n": 2}),
    ]
    assert "part 1 cannot be done" in seen(redis, "tolerant")[0]["error"]
    assert load_job(redis, flows.keys, "tolerant").result == 2


def test_a_child_that_finishes_as_a_duplicate_counts_as_done(redis: Redis, settings: RuntimeSettings) -> None:
    """A child whose effect key is done already never runs: the claim finishes it with the stored
    result, and that too tells the parent."""
    flows = FlowProducer(redis, settings)
    first = flows.enqueuer.enqueue(app.keyed, {"key": "k1", "n": 5})
    with worker_thread(redis, app.registry, settings, queues=QUEUES):
        wait_until(lambda: status(redis, first) == "finished", message="the first keyed job")
        flows.add(FlowJob(app.total, {"label": "d"}, children=[FlowJob(app.keyed, {"key": "k1", "n": 99})]),
                  flow_id="dup")  # fmt: skip
        wait_until(lambda: status(redis, "dup") == "finished", message="the parent")
    assert runs(redis, app.PART_RUNS) == [first]  # the child never ran
    assert [(c["status"], c["result"]) for c in seen(redis, "dup")] == [("finished", {"n": 5})]


def test_a_requeued_dead_parent_runs_and_sees_its_children(redis: Redis, settings: RuntimeSettings) -> None:
    flows = FlowProducer(redis, settings)
    flows.add(FlowJob(app.total, {"label": "x"}, children=[part(1, fail=True), part(2)]), flow_id="again")
    with worker_thread(redis, app.registry, settings, queues=QUEUES):
        wait_until(lambda: status(redis, "again") == "failed", message="the parent dead-lettered")
        wait_until(lambda: status(redis, "again-1") == "finished", message="the other child")
        assert DeadLetters(redis, settings).requeue(["again"]) == ["again"]
        wait_until(lambda: status(redis, "again") == "finished", message="the requeued parent to run")
    assert [c["status"] for c in seen(redis, "again")] == ["failed", "finished"]


def test_cancelling_a_child_or_a_waiting_parent(redis: Redis, settings: RuntimeSettings) -> None:
    flows = FlowProducer(redis, settings)
    control = Control(redis, settings)
    flows.add(
        FlowJob(app.total, {"label": "x"}, children=[part(1), part(2, on_failure="ignore")]), flow_id="p1"
    )
    flows.add(FlowJob(app.total, {"label": "y"}, children=[part(3), part(4)]), flow_id="p2")
    assert control.cancel("p1-1").action == "removed"  # ignored: the parent runs without it
    assert control.cancel("p2").action == "removed"  # a waiting parent: never runs
    assert not redis.zscore("rq:deferred:parents", "p2")
    with worker_thread(redis, app.registry, settings, queues=QUEUES):
        wait_until(lambda: status(redis, "p1") == "finished", message="p1 to run")
        wait_until(lambda: status(redis, "p2-1") == "finished", message="p2's children to run")
    assert [c["status"] for c in seen(redis, "p1")] == ["finished", "canceled"]
    assert status(redis, "p2") == "canceled" and "p2" not in runs(redis, app.TOTAL_RUNS)


def test_a_flow_is_written_whole_or_not_at_all(redis: Redis, settings: RuntimeSettings) -> None:
    flows = FlowProducer(redis, settings)
    redis.hset("rq:job:taken-1", mapping={"status": "finished"})  # the id of the flow's second child
    before = sorted(redis.keys("*"))
    with pytest.raises(FlowRefused, match="taken-1"):
        flows.add(FlowJob(app.total, {"label": "x"}, children=[part(1), part(2)]), flow_id="taken")
    assert sorted(redis.keys("*")) == before
    with pytest.raises(ValueError, match="idempotency_key"):
        flows.add(FlowJob(app.total, {"label": "x"}, children=[
            FlowJob(app.part, {"n": 1}, options=EnqueueOptions(idempotency_key="k"))]))  # fmt: skip
    with pytest.raises(ValueError, match="delay"):
        flows.add(FlowJob(app.total, {"label": "x"}, options=EnqueueOptions(delay=5), children=[part(1)]))
    with pytest.raises(ValueError, match="n"):
        flows.add(FlowJob(app.total, {"label": "x"}, children=[FlowJob(app.part, {"n": "many"})]))
    assert sorted(redis.keys("*")) == before


def test_a_flow_is_shown_as_a_tree(
    redis: Redis, settings: RuntimeSettings, capsys: pytest.CaptureFixture[str], cli_env: None
) -> None:
    flows = FlowProducer(redis, settings)
    flows.add(FlowJob(app.total, {"label": "t"}, children=[
        part(1), FlowJob(app.total, {"label": "n"}, children=[part(2, "b")], on_failure="ignore"),
    ]), flow_id="tree")  # fmt: skip
    registry = DeferredJobRegistry("parents", connection=redis, serializer=JSONSerializer)
    assert sorted(registry.get_job_ids()) == ["tree", "tree-1"]  # rq's own tools see the waiting parents
    assert Job.fetch("tree", connection=redis, serializer=JSONSerializer).get_status() == "deferred"
    assert cli.main(["job", "tree", "tree-1-0", "--json"]) == 0  # any job of the flow shows it all
    data = json.loads(capsys.readouterr().out)
    assert (data["id"], data["status"], data["waiting_for"]) == ("tree", "deferred", 2)
    assert [(c["id"], c["status"], c["on_failure"]) for c in data["children"]] == [
        ("tree-0", "queued", "fail_parent"), ("tree-1", "deferred", "ignore")]  # fmt: skip
    assert data["children"][1]["children"][0]["id"] == "tree-1-0"
    assert cli.main(["job", "tree", "tree"]) == 0
    text = capsys.readouterr().out
    assert "tree  flow.total  queue=parents  deferred (waiting for 2 of 2 children)" in text
    assert "└── tree-1-0  flow.part  queue=b  queued  [fail_parent]" in text
    assert cli.main(["job", "tree", "nothing-here"]) == 1
    assert capsys.readouterr().err.strip() == "chumon: no job nothing-here"
