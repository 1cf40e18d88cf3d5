"""``chumon metrics``: one Prometheus exporter for the state that lives in Redis.

Read at every scrape (a few pipelined round trips), never cached:

- ``chumon_queue_depth{queue}``: jobs waiting; ``chumon_queue_oldest_age_seconds{queue}``:
  how long the job at the head has waited; ``chumon_queue_scheduled{queue}`` (retries and
  delayed jobs); ``chumon_queue_started{queue}`` (running now);
- ``chumon_dead_letters{queue}``: dead letters per origin queue;
  ``chumon_dead_letter_alert{queue}``: 1 when above ``CHUMON_DLQ_ALERT_THRESHOLD``;
  ``chumon_dead_letters_dropped_total{queue}``: removed by the cap or the retention;
- ``chumon_workers_alive``: workers that heartbeated within ``worker_ttl``;
- ``chumon_projector_lag_events``, ``chumon_projector_lag_seconds``: how far the read model is
  behind the event log; ``chumon_orders{status}``: orders in the read model by status;
- ``chumon_events_dead_letters{group}``: entries parked by each consumer group of the event
  log (the projector, the reactors), waiting for ``chumon events dlq retry``;
- ``chumon_sagas_overdue``: sagas past their deadline (the watchdog flags them).

Per-process counters (jobs by outcome, durations, recoveries, saga outcomes) come from each
worker's and the events process's own endpoint (``--metrics-port``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis

from orders.model import OrderStatus
from orders.projector import GROUP
from orders.reactors import SERVICES
from orders.readmodel import ReadModel
from orders.shards import Shards
from workers.codec import parse_iso, readable
from workers.control import Control
from workers.keys import RELAY_SUFFIX, is_dead_letter_queue, origin_of_dead_letter_queue
from workers.layout import Layout
from workers.queueindex import QueueIndex
from workers.settings import RuntimeSettings
from workers.streams import GroupReader

log = logging.getLogger("chumon.metrics")


class RedisCollector(Collector):
    def __init__(self, redis: Redis, settings: RuntimeSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.layout = Layout(redis, settings)
        self.keys = self.layout.base
        # the order flow's shards: on Redis Cluster, each one's read model and event log
        count = settings.shards if self.layout.cluster else None
        self.order_shards = Shards(settings.key_prefix, count).all()

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._orders()

    def _queues(self) -> Iterator[Metric]:
        """Queue, dead-letter and worker state. Garbage in a key reads as 0, never as a failed scrape.

        On Redis Cluster, every queue's slot is read (in one pipeline, which goes to each primary
        once); the counts of the slots are added up."""
        now = time.time()
        work: list[str] = []
        dead: list[str] = []
        counted: dict[object, int] = {}
        alive_count = quarantined_count = 0.0
        families = self.layout.every_keys()
        listed = [sorted(QueueIndex(self.redis, keys, log=log).names()) for keys in families]
        with self.redis.pipeline(transaction=False) as pipe:
            for keys, queues in zip(families, listed, strict=True):
                for name in queues:
                    if is_dead_letter_queue(name) or name.endswith(RELAY_SUFFIX):
                        continue
                    work.append(name)
                    pipe.llen(keys.queue(name))
                    pipe.lindex(keys.queue(name), 0)
                    pipe.zcard(keys.scheduled(name))
                    pipe.zcard(keys.wip(name))
            for keys, queues in zip(families, listed, strict=True):
                for name in queues:
                    if is_dead_letter_queue(name):
                        dead.append(name)
                        pipe.llen(keys.queue(name))
            for keys in families:
                pipe.hgetall(keys.dlq_dropped)
                pipe.zcount(keys.live_workers, now - self.settings.worker_ttl, "+inf")
                pipe.xlen(keys.quarantine)
            replies = pipe.execute(raise_on_error=False)
        per_queue, rest = replies[: 4 * len(work)], replies[4 * len(work) :]
        dead_counts, totals = rest[: len(dead)], rest[len(dead) :]
        for i in range(len(families)):
            dropped_map, alive_reply, quarantine_reply = totals[3 * i : 3 * i + 3]
            if isinstance(dropped_map, dict):
                for origin, count in dropped_map.items():
                    if isinstance(count, bytes | str) and (readable(count) or "").isdigit():
                        counted[origin] = counted.get(origin, 0) + int(count)
            alive_count += _number(alive_reply)
            quarantined_count += _number(quarantine_reply)
        heads = {
            name: head
            for i, name in enumerate(work)
            if isinstance(per_queue[4 * i + 1], bytes) and (head := readable(per_queue[4 * i + 1]))
        }
        with self.redis.pipeline(transaction=False) as pipe:
            for name, head in heads.items():
                pipe.hget(self.layout.keys(name).job(head), "enqueued_at")
            enqueued = dict(zip(heads, pipe.execute(raise_on_error=False), strict=True))
        depth = GaugeMetricFamily("chumon_queue_depth", "Jobs waiting in the queue.", labels=["queue"])
        age = GaugeMetricFamily(
            "chumon_queue_oldest_age_seconds", "Wait of the job at the head.", labels=["queue"]
        )
        scheduled = GaugeMetricFamily("chumon_queue_scheduled", "Retries and delayed jobs.", labels=["queue"])
        started = GaugeMetricFamily("chumon_queue_started", "Jobs running now.", labels=["queue"])
        prioritized = GaugeMetricFamily(
            "chumon_queue_prioritized",
            "Jobs waiting with a priority (counted in depth too).",
            labels=["queue"],
        )
        paused = GaugeMetricFamily("chumon_queue_paused", "1 while the queue is paused.", labels=["queue"])
        throttled = GaugeMetricFamily(
            "chumon_queue_throttled_seconds",
            "Seconds left of a 'slow down' pause a job asked for (RateLimited).",
            labels=["queue"],
        )
        flows = Control(self.redis, self.settings).flows(work)
        for i, name in enumerate(work):
            depth.add_metric([name], _number(per_queue[4 * i]) + flows[i].prioritized)
            age.add_metric([name], _age(enqueued.get(name), now))
            scheduled.add_metric([name], _number(per_queue[4 * i + 2]))
            started.add_metric([name], _number(per_queue[4 * i + 3]))
            prioritized.add_metric([name], flows[i].prioritized)
            paused.add_metric([name], 1.0 if flows[i].paused else 0.0)
            throttled.add_metric([name], flows[i].throttled_for)
        yield from (depth, age, scheduled, started, prioritized, paused, throttled)
        letters = GaugeMetricFamily("chumon_dead_letters", "Dead letters per origin queue.", labels=["queue"])
        alert = GaugeMetricFamily(
            "chumon_dead_letter_alert", "1 when a dead-letter queue is above its threshold.", labels=["queue"]
        )
        for name, count in zip(dead, dead_counts, strict=True):
            origin = origin_of_dead_letter_queue(name)
            letters.add_metric([origin], _number(count))
            alert.add_metric([origin], 1.0 if _number(count) > self.settings.dlq_alert_threshold else 0.0)
        dropped = CounterMetricFamily(
            "chumon_dead_letters_dropped",
            "Dead letters removed by the cap or the retention.",
            labels=["queue"],
        )
        for origin, count in counted.items():
            if isinstance(origin, bytes | str) and (queue := readable(origin)):
                dropped.add_metric([queue], count)
        alive = GaugeMetricFamily("chumon_workers_alive", "Workers that heartbeated within worker_ttl.")
        alive.add_metric([], alive_count)
        quarantined = GaugeMetricFamily(
            "chumon_quarantined",
            "Ids found in queues that can never be run (chumon:quarantine, last 10,000).",
        )
        quarantined.add_metric([], quarantined_count)
        yield from (letters, alert, dropped, alive, quarantined)

    def _orders(self) -> Iterator[Metric]:
        """The read model and the event log; on Redis Cluster, every shard's added up (the lag in
        seconds: the largest)."""
        behind, seconds = 0, 0.0
        counts = dict.fromkeys(OrderStatus, 0)
        for keys in self.order_shards:
            events, age = GroupReader(self.redis, keys.events, GROUP).lag()
            behind, seconds = behind + events, max(seconds, age)
            gen = ReadModel(self.redis, keys).current(fresh=True)
            with self.redis.pipeline(transaction=False) as pipe:
                for status in OrderStatus:
                    pipe.zcard(keys.view_status(gen, status.value))
                for status, count in zip(OrderStatus, pipe.execute(), strict=True):
                    counts[status] += int(count)
        yield GaugeMetricFamily(
            "chumon_projector_lag_events", "Events not yet in the read model.", value=behind
        )
        yield GaugeMetricFamily("chumon_projector_lag_seconds", "Age of the oldest of them.", value=seconds)
        orders = GaugeMetricFamily("chumon_orders", "Orders in the read model, by status.", labels=["status"])
        for status, count in counts.items():
            orders.add_metric([status.value], count)
        yield orders
        yield from self._parked()

    def _parked(self) -> Iterator[Metric]:
        groups = [GROUP, *(f"reactor-{service}" for service in SERVICES)]
        with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.order_shards:
                for group in groups:
                    pipe.xlen(keys.parked_events(group))
                pipe.zcount(keys.saga_deadlines, "-inf", time.time())
            replies = pipe.execute()
        depths = dict.fromkeys(groups, 0)
        overdue = 0
        width = len(groups) + 1
        for i in range(len(self.order_shards)):
            *shard_depths, shard_overdue = replies[i * width : (i + 1) * width]
            for group, depth in zip(groups, shard_depths, strict=True):
                depths[group] += int(depth)
            overdue += int(shard_overdue)
        parked = GaugeMetricFamily(
            "chumon_events_dead_letters",
            "Entries parked by a consumer group of the event log.",
            labels=["group"],
        )
        for group, depth in depths.items():
            parked.add_metric([group], depth)
        yield parked
        yield GaugeMetricFamily("chumon_sagas_overdue", "Sagas past their deadline.", value=overdue)


def _age(enqueued_at: object, now: float) -> float:
    stamp = readable(enqueued_at) if isinstance(enqueued_at, bytes | str) else None
    try:
        return max(0.0, now - parse_iso(stamp).timestamp()) if stamp else 0.0
    except ValueError:
        return 0.0


def _number(reply: object) -> float:
    """A count from a pipelined reply; 0 where the key held garbage (the reply is an error)."""
    return float(reply) if isinstance(reply, int | float) else 0.0


def registry(redis: Redis, settings: RuntimeSettings) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(RedisCollector(redis, settings))
    return reg
