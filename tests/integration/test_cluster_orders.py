"""The order flow on a real Redis Cluster, sharded by order (orders/shards.py).

Each shard is a group of slots' worth of keys: its orders, event stream, read model, job index
and its copy of the service queues. Orders are placed on every shard; each must end CONFIRMED
or CANCELLED as on one Redis, with the audit counting every charge, refund, shipment and email
from the parties' raw records, and the read model (per shard, lists merged) agreeing with the
write side. Both saga styles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chumon import cli
from chumon.exporter import registry as exporter_registry
from chumon.settings import load
from orders.shards import ShardedStore
from tests.clusterproc import ClusterNodes
from tests.flow import running_flow
from tests.integration.test_metrics_and_logs import samples, value
from workers.connection import connect
from workers.keys import shard_tags


@pytest.fixture
def cluster() -> Iterator[ClusterNodes]:
    with ClusterNodes(primaries=3, replicas=0) as nodes:
        yield nodes


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_orders_on_every_shard_end_as_on_one_redis(
    cluster: ClusterNodes, style: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = connect(cluster.url)
    with running_flow(redis, cluster.url, style=style) as flow:
        store = flow.services.orders.store
        assert isinstance(store, ShardedStore)
        ids = [
            flow.place(("TEA", 1), ("MUG", 1), customer_email=f"c{n}@example.com", idempotency_key=f"k{n}")
            for n in range(9)
        ]
        ids.append(flow.place(("TEA", 1), payment_token="tok_declined"))
        assert {store.shards.tag_of(order_id) for order_id in ids} == set(shard_tags(3))  # every shard
        for order_id in ids:
            flow.settled(order_id)
        again = flow.place(("TEA", 1), ("MUG", 1), customer_email="c0@example.com", idempotency_key="k0")
        assert again == ids[0]  # the key's shard holds its first order
        report = flow.audit()
        assert report.ok, report
        assert report.by_status == {"CONFIRMED": 9, "CANCELLED": 1}
        assert report.charges == 9 and report.shipments == 9 and report.emails_received == 10
        assert flow.read_side_differences(ids) == []
        listed = {summary.order_id for summary in flow.producer.list_orders(limit=50)}
        assert listed == set(ids)  # the shards' read models, merged
        for primary in cluster.alive():  # every primary holds orders' keys
            with primary.client() as client:
                assert any(b"order:" in key for key in client.scan_iter(count=1000))
        found = samples(exporter_registry(redis, flow.settings))
        assert value(found, "chumon_orders", status="CONFIRMED") == 9  # every shard's, added up
        assert value(found, "chumon_orders", status="CANCELLED") == 1
    monkeypatch.setenv("REDIS_URL", cluster.url)
    load.cache_clear()
    try:
        capsys.readouterr()
        assert cli.main(["projections", "rebuild", "--json"]) == 0
        rebuilt = json.loads(capsys.readouterr().out)["shards"]
        assert len(rebuilt) == 3 and sum(r["orders"] for r in rebuilt) == 10  # each shard's, replayed
        assert cli.main(["projections", "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["orders"] == 10 and len(status["shards"]) == 3
        assert cli.main(["order", "show", ids[-1], "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "CANCELLED"
        assert cli.main(["order", "list", "--json"]) == 0
        assert {o["order_id"] for o in json.loads(capsys.readouterr().out)} == set(ids)
        assert cli.main(["events", "dlq", "list", "--json"]) == 0  # every shard's: none parked
        assert json.loads(capsys.readouterr().out) == []
        assert cli.main(["trace", ids[0], "--json"]) == 0  # from its shard's log and jobs
        traced = json.loads(capsys.readouterr().out)
        assert traced["status"] == "CONFIRMED" and traced["events"] >= 5 and traced["commands"] >= 4
        assert cli.main(["tail", "--from-start", "--duration", "1", "--json"]) == 0  # every shard's log
        tailed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        placed = {t["order_id"] for t in tailed if t["kind"] == "event" and t["type"] == "OrderPlaced"}
        assert placed == set(ids)
    finally:
        load.cache_clear()
    redis.close()


def test_a_bounced_email_on_a_shard_flags_its_order_through_the_shard_hook(cluster: ClusterNodes) -> None:
    """The notification job dies on its shard's queue; the order flow's hook runs on the same shard
    (no relay: the hook's queue is sharded too) and flags the order."""
    from workers.deadletter import DeadLetters

    redis = connect(cluster.url)
    with running_flow(redis, cluster.url) as flow:
        order_id = flow.place(("TEA", 1), customer_email="bounce@example.com")
        order = flow.settled(order_id)
        assert order.status.value == "CONFIRMED" and "confirmation email" in (order.attention or "")
        dead = DeadLetters(flow.redis, flow.settings).entries("notifications")  # every shard's copy
        tag = flow.services.orders.store.shards.tag_of(order_id)
        assert [(d.job_type, d.queue) for d in dead] == [
            ("notifications.confirmation", f"notifications@{tag}")
        ]
    redis.close()
