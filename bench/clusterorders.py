"""The order flow on Redis Cluster with 1, 2 and 3 primaries beside one Redis (bench/cluster.py).

Each configuration starts the order processes of ``Procfile.cluster`` (a worker process per
service queue, which runs one worker per shard on a cluster, and the consumers), seeds stock,
and places N orders as fast as ``threads`` threads can, each with its own client; the clock
runs from the first placing to the moment every order is CONFIRMED in the read model (every
shard's, added up). Then every order must be CONFIRMED on the write side with one successful
charge and one confirmation email (every message the in-memory SMTP sink received), else the
run fails. Redis CPU is every primary's over the run, as for the jobs.

Also the slot balance of 10,000 orders: the share of orders each primary would hold with the
shard tags chumon picks (``workers.keys.shard_tags``, evenly spaced slots) and with naive tags
(``{o0}``, ``{o1}``...), given the cluster's slot ranges.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis import Redis
from redis.crc import key_slot

import jobs
from bench import ROOT
from bench.clusterenv import CpuMeter, child_env, servers, wait
from bench.drain import RunFailed
from bench.orderflow import (
    CATALOGUE,
    SMTP_KEEP_ALIVE,
    STOCK,
    order_request,
    procfile_lines,
    shell,
    stop_processes,
)  # fmt: skip
from chumon.bootstrap import build_services, order_shards
from chumon.settings import Settings
from chumon.smtpsink import SmtpSink
from orders.config import SagaConfig, SmtpConfig
from orders.model import OrderStatus
from orders.readmodel import ReadModel
from producer import Producer
from workers.connection import connect
from workers.keys import SLOTS, shard_tags

PROCFILE = ROOT / "Procfile.cluster"


def run_orders_config(primaries: int, orders: int, threads: int) -> dict[str, Any]:
    """One timed burst of ``orders`` on a fresh server (0) or cluster of ``primaries``, with as
    many shards as primaries (each shard's copy of the services is one more worker per process)."""
    shards = max(1, primaries)
    with servers(primaries) as (url, nodes), SmtpSink(port=0) as sink:
        smtp, saga = SmtpConfig(port=sink.port), SagaConfig(style="orchestrated")
        settings = Settings(redis_url=url, smtp=smtp, saga=saga, shards=shards)
        redis = connect(url, settings.redis)
        services = build_services(redis, settings)
        for sku, price in CATALOGUE.items():
            services.inventory.set_stock(sku, STOCK, price)
        env = child_env(url, CHUMON_SMTP__PORT=str(sink.port), CHUMON_SMTP__KEEP_ALIVE=str(SMTP_KEEP_ALIVE),
                        CHUMON_SHARDS=str(shards))  # fmt: skip
        lines = procfile_lines(PROCFILE)
        quiet = subprocess.DEVNULL
        procs = [subprocess.Popen(shell(c), cwd=ROOT, env=env, stdout=quiet, stderr=quiet) for _, c in lines]
        meter = CpuMeter(nodes)
        try:
            shard_keys = order_shards(redis, settings).all()
            workers = sum(1 for _, c in lines if " worker " in f" {c} ")
            registered = lambda: all(int(redis.zcard(k.runtime.live_workers)) >= workers for k in shard_keys)  # noqa: E731
            wait(registered, 60, "the workers to register")
            placers = [
                Producer(client, settings, jobs.registry, build_services(client, settings).orders)
                for client in (connect(url, settings.redis) for _ in range(threads))
            ]
            views = [ReadModel(redis, keys) for keys in shard_keys]
            meter.start()
            start = time.time()

            def place_share(k: int) -> list[str]:
                placer = placers[k]
                return [placer.place_order(**order_request(i)).order_id for i in range(k, orders, threads)]

            with ThreadPoolExecutor(threads) as pool:
                ids = [order_id for share in pool.map(place_share, range(threads)) for order_id in share]
            wait(lambda: _confirmed(redis, views) >= orders, max(120.0, orders / 10), "every order confirmed")
            elapsed = time.time() - start
            meter.stop()
            # the confirmation emails follow (not timed): each order's must arrive, once
            emailed = lambda: sum(m.get("kind") == "confirmation" for m in sink.messages()) >= orders  # noqa: E731
            wait(emailed, 120.0, "every confirmation email")
            _check(services, ids, sink)
            for placer in placers:
                placer.redis.close()
        finally:
            stop_processes(procs)
        row = meter.row(orders, elapsed, "order")
        redis.close()
    return {"primaries": primaries, "orders": orders, **row}


def _confirmed(redis: Redis, views: list[ReadModel]) -> int:
    total = 0
    for view in views:
        gen = view.current()
        total += int(redis.zcard(view.keys.view_status(gen, OrderStatus.CONFIRMED.value)))
    return total


def _check(services: Any, ids: list[str], sink: SmtpSink) -> None:
    """Every order CONFIRMED, charged once, emailed once: else the run fails."""
    problems = []
    for order_id in ids:
        loaded = services.orders.get(order_id)
        if loaded is None or loaded.order.status is not OrderStatus.CONFIRMED:
            problems.append(f"order {order_id}: {loaded.order.status.value if loaded else 'missing'}")
    charged = Counter(c.order_id for c in services.payments.charges() if c.status == "succeeded")
    emailed = Counter(m.get("order_id") for m in sink.messages() if m.get("kind") == "confirmation")
    problems += [f"order {i}: {charged[i]} charge(s)" for i in ids if charged[i] != 1]
    problems += [f"order {i}: {emailed[i]} email(s)" for i in ids if emailed[i] != 1]
    if problems:
        raise RunFailed(f"orders on the cluster: {len(problems)} problem(s): " + "; ".join(problems[:5]))


def slot_balance(primaries: int, orders: int = 10_000, shards: int = 3) -> dict[str, list[float]]:
    """The share of ``orders`` each of ``primaries`` (equal slot ranges) holds, orders spread
    evenly over ``shards`` shard tags: chumon's tags, and naive ones ({o0}, {o1}...)."""

    def shares(tags: list[str]) -> list[float]:
        per = [0] * primaries
        for n in range(orders):  # an order's keys are all in its shard's slot
            slot = key_slot(tags[n % len(tags)].encode())
            per[min(slot * primaries // SLOTS, primaries - 1)] += 1
        return [round(count / orders, 3) for count in per]

    return {"chumon": shares(list(shard_tags(shards))), "naive": shares([f"o{k}" for k in range(shards)])}
