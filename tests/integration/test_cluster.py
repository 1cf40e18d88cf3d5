"""A real Redis Cluster of the test's own (tests/clusterproc.py), and what chumon does with it today.

chumon does not run on a cluster yet (docs/operations.md, "Which server"): its scripts span keys
of many slots. Until it does, every process must refuse one at start, before writing anything,
whichever node or URL it is given. The fixture itself is checked here too: the cluster forms
with a replica per primary, and a killed primary's replica takes over with the data it held.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from chumon import cli
from chumon.settings import load
from producer import Producer
from tests.apps import sample
from tests.clusterproc import ClusterNodes
from tests.support import make_settings
from workers import Worker
from workers.errors import ServerUnsupported


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterNodes]:
    with ClusterNodes(primaries=3, replicas=1) as nodes:
        yield nodes


def _total_keys(cluster: ClusterNodes) -> int:
    total = 0
    for server in cluster.alive():
        with server.client() as client:
            total += int(client.dbsize())
    return total


def test_every_process_refuses_the_cluster_before_writing(
    cluster: ClusterNodes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _total_keys(cluster)
    for url in (cluster.url, cluster.servers[0].url):
        monkeypatch.setenv("REDIS_URL", url)
        load.cache_clear()
        try:
            assert cli.main(["queues"]) == 2
            place = ["order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada"]
            assert cli.main([*place, "--item", "TEA:1", "--ship-to", "12 Analytical Lane"]) == 2
        finally:
            load.cache_clear()
    node = cluster.servers[0]
    with pytest.raises(ServerUnsupported, match="Redis Cluster node"):
        Worker(node.client(), sample.registry, make_settings(node.url)).run(burst=True)
    monkeypatch.setenv("REDIS_URL", node.url)
    with pytest.raises(ServerUnsupported, match="Redis Cluster node"):
        Producer.connect()
    assert _total_keys(cluster) == before  # nothing written, on any node
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any("Redis Cluster is not supported yet" in line for line in err), err


def test_a_killed_primary_is_replaced_by_its_replica_with_its_data(cluster: ClusterNodes) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.servers[0].port)
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
