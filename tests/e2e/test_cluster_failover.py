"""Orders placed while a Redis Cluster primary is killed: the issue's check, from outside.

A 3-primary cluster with a replica each (tests/clusterproc.py), the order processes of
``Procfile.cluster`` as real processes given the ``redis+cluster://`` URL (a worker process per
service queue, each running one worker per shard; the consumers process, every shard's), an SMTP sink in
memory (a failover cannot erase what it received) and a producer in this process placing orders
at a steady rate, each with its own idempotency key, retrying a failed call with the same key,
recording every acknowledged order id. ``CHUMON_REDIS__REPLICAS_ACK=1``: an acknowledged write
is on a replica. Mid-run the primary of one shard is SIGKILLed and its replica takes over; the
old one is restarted, as a supervisor would, and rejoins as its replica (until then the shard's
writes cannot be acknowledged: there is no replica to wait for, and producers retry).

Then, as on one Redis with Sentinel: every acknowledged order exists and ended CONFIRMED or
CANCELLED (0 lost, 0 stuck), no email names an order that does not exist, no order got a second
email of a kind (counted from every message the sink received), and the gateway recorded one
charge per confirmed order and none for a cancelled one. The primary killed is the one that
holds a shard and neither the stock nor the simulated gateway and carrier (whose records stand
in for external systems, which a Redis failover would not touch).
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from contextlib import ExitStack

import pytest
from redis.crc import key_slot

import jobs
from bench.orderflow import procfile_lines
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.keys import STOCK_TAG
from producer import Producer
from tests.clusterproc import ClusterNodes
from tests.failover import Placer
from tests.flow import CATALOGUE, flow_settings
from tests.support import ROOT, ChumonProcess, wait_until
from workers.connection import RedisOptions, connect
from workers.keys import shard_tags

pytestmark = pytest.mark.e2e


def test_orders_placed_while_a_shard_primary_is_killed_lose_nothing_and_double_nothing() -> None:
    with ExitStack() as stack:
        cluster = stack.enter_context(ClusterNodes(primaries=3, replicas=1))
        sink = stack.enter_context(SmtpSink(port=0))
        options = RedisOptions(replicas_ack=1, replicas_timeout_ms=1000, socket_timeout=5)
        settings = flow_settings(cluster.url, sink.port, redis=options)
        redis = connect(cluster.url, options)
        stack.callback(redis.close)
        services = build_services(redis, settings)
        for sku, (_, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, 100_000, price)
        env = {"smtp__port": sink.port, "redis__replicas_ack": 1, "redis__replicas_timeout_ms": 1000,
               "events__claim_after": 1.0}  # fmt: skip
        processes = [  # Procfile.cluster's lines that move orders, each a process of its own
            ChumonProcess(cluster.url, *shlex.split(command.replace("${PORT:-0}", "0"))[1:], **env)
            for _, command in procfile_lines(ROOT / "Procfile.cluster")
        ]
        for process in processes:
            stack.callback(process.stop)
        shared = {key_slot(tag.encode()) for tag in (STOCK_TAG, "payments", "carrier")}
        victim_tag = next(
            tag for tag in shard_tags(settings.shards)
            if not any(cluster.primary_of(tag) == cluster.primary_of(other) for other in
                       (STOCK_TAG, "payments", "carrier"))
        )  # fmt: skip
        assert key_slot(victim_tag.encode()) not in shared
        victim = cluster.primary_of(victim_tag)
        placer = Placer(Producer(redis, settings, jobs.registry, services.orders), total=90, rate=30.0)
        stack.callback(placer.stop.set)
        placer.thread.start()
        wait_until(lambda: len(placer.acknowledged) >= 30, timeout=60, message="orders before the kill")
        cluster.kill(victim)
        killed_at = time.monotonic()
        cluster.wait_for(lambda: cluster.serving(victim_tag) not in (None, victim), "the replica's promotion")
        promoted_in = time.monotonic() - killed_at
        victim.start()  # what a supervisor does: it rejoins as the new primary's replica
        cluster.wait_for(cluster.healthy, "the old primary to rejoin as a replica", 60)
        placer.thread.join(timeout=60)
        assert not placer.thread.is_alive(), f"the producer did not finish: {placer.errors.most_common(3)}"
        assert not [e for e in placer.errors if e.startswith("UnknownSku")]  # Redis's trouble, said as such
        ids = list(placer.acknowledged)
        assert len(ids) == 90 and any(services.orders.store.shards.tag_of(i) == victim_tag for i in ids)

        def states() -> list[str | None]:
            found = []
            for order_id in ids:
                try:
                    loaded = services.orders.get(order_id)
                except Exception:  # the client during the failover
                    return [None]
                found.append(loaded.order.status.value if loaded else None)
            return found

        wait_until(lambda: all(s in ("CONFIRMED", "CANCELLED") for s in states()), timeout=120,
                   message="every acknowledged order to end")  # fmt: skip
        final = dict(zip(ids, states(), strict=True))
        assert [i for i, s in final.items() if s is None] == []  # lost
        assert [i for i, s in final.items() if s not in ("CONFIRMED", "CANCELLED")] == []  # stuck

        def emailed() -> bool:
            seen = {(m.get("order_id"), m.get("kind")) for m in sink.messages()}
            kinds = {"CONFIRMED": "confirmation", "CANCELLED": "cancellation"}
            return all((i, kinds[str(s)]) in seen for i, s in final.items())

        wait_until(emailed, timeout=60, message="every order's email")
        messages = sink.messages()
        assert {m["order_id"] for m in messages if m.get("order_id")} <= set(ids)  # none for a missing order
        copies = Counter((m.get("order_id"), m.get("kind")) for m in messages)
        assert [key for key, n in copies.items() if n > 1] == []  # no second email of a kind
        succeeded = Counter(c.order_id for c in services.payments.charges() if c.status == "succeeded")
        confirmed = {i for i, s in final.items() if s == "CONFIRMED"}
        assert {i for i, n in succeeded.items() if n > 1} == set()  # no second charge
        assert set(succeeded) >= confirmed
        for process in processes:
            assert process.proc.poll() is None, process.output[-3000:]  # both lived through it
    print(f"\npromoted in {promoted_in:.1f} s; {len(confirmed)} confirmed, refused calls {placer.refused}")
