"""Worker processes on a real Redis Cluster: `chumon worker --queues a b c` runs one worker per
queue (each queue in its own slot, on its own primary), and a SIGKILLed process's runs are
recovered by the next one, each job's effect applied once (counted from the raw records)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.apps import clustered
from tests.clusterproc import ClusterNodes
from tests.integration.test_cluster import TALLY, spread_queues
from tests.support import WorkerProcess, make_settings, wait_until
from workers import EnqueueOptions, Enqueuer
from workers.connection import connect

pytestmark = pytest.mark.e2e
APP = "tests.apps.clustered:registry"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterNodes]:
    with ClusterNodes(primaries=3, replicas=0) as nodes:
        yield nodes


def test_a_sigkilled_worker_process_is_recovered_on_every_primary(cluster: ClusterNodes) -> None:
    settings = make_settings(cluster.url)
    redis = connect(cluster.url, settings.redis)
    queues = spread_queues("proc")
    assert len({cluster.primary_of(q).port for q in queues}) == 3
    enqueuer = Enqueuer(redis, settings)
    per_queue = 60
    for queue in queues:
        enqueuer.enqueue_many(
            TALLY, [{"n": n, "ms": 30} for n in range(per_queue)], options=EnqueueOptions(queue=queue)
        )

    def tallies(queue: str) -> dict[bytes, bytes]:
        return redis.hgetall(clustered.effects(queue))

    victim = WorkerProcess(
        cluster.url, "--queues", *queues, "--concurrency", "4", "--name", "victim", app=APP
    )
    try:
        wait_until(
            lambda: all(len(tallies(q)) >= 5 for q in queues), timeout=30, message="every queue served"
        )
        victim.kill()
        assert any(len(tallies(q)) < per_queue - 10 for q in queues)  # killed mid-run
    finally:
        victim.stop()
    survivor = WorkerProcess(
        cluster.url, "--queues", *queues, "--concurrency", "4", "--name", "survivor", app=APP
    )
    try:
        wait_until(
            lambda: all(len(tallies(q)) == per_queue for q in queues), timeout=60, message="every effect"
        )
    finally:
        survivor.stop()
    assert survivor.proc.returncode == 0, survivor.output[-2000:]
    restarted = 0
    for queue in queues:
        assert set(tallies(queue).values()) == {b"1"}  # each effect once
        starts = [int(entry.split(b":")[0]) for entry in redis.lrange(clustered.starts(queue), 0, -1)]
        assert set(starts) == set(range(per_queue))
        restarted += len(starts) - per_queue
        assert redis.zcard(f"rq:{{{queue}}}:wip:{queue}") == 0  # nothing left running
        assert redis.zscore(f"chumon:{{{queue}}}:workers", f"victim.{queue}") is None  # forgotten
    assert restarted > 0  # runs the kill cut short ran again
    assert "survivor." in survivor.output and "Traceback" not in survivor.output
    redis.close()
