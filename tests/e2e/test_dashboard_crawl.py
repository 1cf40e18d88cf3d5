"""Every page and JSON endpoint of ``chumon dashboard``, crawled while the order flow runs and
Redis holds garbage: 200 everywhere, 404 only for an id whose job hash is not there.

The live state: orders in flight (their shipping step waits: no worker serves ``shipping``,
so each has a step time-out scheduled on ``orders``), cancelled orders with their emails, a
dead letter, a scheduled retry, a busy and an idle worker. The garbage, written raw: ids with
``.`` and ``:`` (the order flow's time-out jobs were named ``<order>.timeout.<step>``),
pickled data and meta (a pickle that would leave a marker if anyone unpickled it), garbled
dates, counters, meta, results and failure texts, bytes that are not UTF-8 in ids, fields and
queue names, meta nested too deeply for a JSON parser, listed ids without a job hash, a
worker busy on a pickled job and one busy on a job that is gone.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis import Redis

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.config import SagaConfig
from orders.keys import OrderKeys
from producer import Producer
from tests.dashboard_support import KEYS, Dashboard, dashboard_state, running_dashboard
from tests.flow import CATALOGUE, flow_settings
from tests.support import WorkerProcess, wait_until

pytestmark = pytest.mark.e2e
LISTS = ["queued", "scheduled", "deferred", "started", "finished", "failed", "canceled"]
NOW = "2026-12-02T10:00:00.000000Z"


class Unpickled:
    """Pickles to a call that creates ``marker``: proof, if it exists, that someone unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def plant_garbage(redis: Redis, marker: Path) -> None:
    pickled = pickle.dumps(Unpickled(marker))
    redis.sadd(KEYS.RQ_QUEUES, KEYS.queue("garbage"), b"rq:queue:\xffnot-utf8", b"not-a-queue-key")
    jobs_by_id: dict[bytes | str, dict[str, Any]] = {
        "o-1.timeout.payments": {
            "data": json.dumps(["orders.timeout", None, [{"o": 1}], {}]),
            "status": "scheduled",
        },
        "a:b:c": {"data": "not json", "meta": "{not json", "created_at": "yesterday", "attempt": "many"},
        "pickled": {"data": b"\x80" + pickled, "meta": pickled, "status": "started"},
        "pickled-meta": {"data": json.dumps(["t.echo", None, [{"text": "x"}], {}]), "meta": pickled},
        b"bytes-\xff\xfe": {"description": "an id that is not UTF-8"},
        "binary-fields": {
            "description": b"\xff\xfe\xfd",
            "origin": b"\xfe",
            "status": b"\x80",
            "meta": b"\xff",
        },
        "deep": {
            "meta": "[" * 100_000 + "]" * 100_000,
            "data": '["t.echo", null, [' + "[" * 50_000 + "]" * 50_000 + "], {}]",
        },
        "zlib-data": {"data": b"x\x9c garbage that is not zlib"},
        "empty-fields": {"description": "", "created_at": "", "origin": "", "meta": ""},
        "depends": {"dependency_ids": "not a list", "created_at": "2026-12-02T10:00:00Z"},
    }
    for job_id, fields in jobs_by_id.items():
        key = KEYS.RQ_JOB.encode() + (job_id if isinstance(job_id, bytes) else job_id.encode())
        redis.hset(key, mapping={"origin": "garbage", "created_at": NOW, **fields})
    results = {
        "a:b:c": {"type": "2", "exc_string": "!!! not base64"},
        "pickled": {"type": "1", "return_value": base64.b64encode(pickled).decode()},
        "pickled-meta": {"type": "1", "return_value": "!!! not base64"},
        "binary-fields": {"type": "1", "return_value": base64.b64encode(b"\xff not json").decode()},
        "zlib-data": {"type": "2", "exc_string": base64.b64encode(b"not zlib").decode()},
    }
    for job_id, entry in results.items():
        redis.xadd(KEYS.results(job_id), entry)
    listed = [
        "o-1.timeout.payments",
        "a:b:c",
        "pickled",
        b"bytes-\xff\xfe",
        "binary-fields",
        "deep",
        "no-hash",
    ]
    redis.rpush(KEYS.queue("garbage"), *listed, "zlib-data", "empty-fields", "depends")
    redis.zadd("rq:scheduled:garbage", {"o-1.timeout.payments": 1, "a:b:c": "inf", "no-hash-2": 2})
    redis.zadd("rq:wip:garbage", {"a:b:c:execution-1": 1, "pickled": 2, "no-execution-part": 3})
    redis.zadd("rq:finished:garbage", {"pickled-meta": 1, "deep": 2})
    redis.zadd("rq:failed:garbage", {"a:b:c": 1, "binary-fields": 2, "zlib-data": 3})
    redis.zadd("rq:deferred:garbage", {"depends": 1})
    redis.zadd("rq:canceled:garbage", {"empty-fields": 1})
    # workers: busy on a pickled job, busy on a job that is gone, garbled, and a name with no hash
    workers = {
        "pickled-worker": {"state": "busy", "current_job": "pickled", "queues": "garbage", "birth": NOW},
        "gone-worker": {"state": "busy", "current_job": "long-gone", "queues": "garbage,q"},
        "garbled-worker": {"state": b"\xff", "pid": "x", "birth": "never", "total_working_time": "a lot",
                           "successful_job_count": "some", "queues": b"\xfe,,", "last_heartbeat": "?"},
    }  # fmt: skip
    for name, fields in workers.items():
        redis.hset(KEYS.rq_worker(name), mapping=fields)
    redis.sadd(
        KEYS.RQ_WORKERS, *(KEYS.rq_worker(n) for n in workers), KEYS.rq_worker("no-hash"), b"\xffworker"
    )


def crawl(dash: Dashboard, redis: Redis) -> list[tuple[str, int, int]]:
    """(path, expected, got) for every page and endpoint; expected is 200, or 404 for a job id
    that has no hash (a listed id whose job is gone, or bytes that are not UTF-8)."""
    seen: list[tuple[str, int, int]] = []

    def get(path: str, expected: int = 200) -> Any:
        reply = dash.request(path)
        seen.append((path, expected, reply.status))
        return reply.json() if path.endswith(".json") and reply.status == 200 else None

    for path in ["/", "/0/", "/0/view", "/0/view/queues", "/0/view/workers", "/0/view/jobs", "/favicon.ico"]:
        get(path)
    assert get("/0/data/workers.json")["workers"]
    queues = [q["name"] for q in get("/0/data/queues.json")["queues"]]
    ids: set[str] = set()
    for name in queues:
        queue = quote(name, safe="")
        for registry in LISTS:
            for order in ("asc", "dsc"):
                get(f"/0/view/jobs/{queue}/{registry}/8/{order}/1")
                for per_page, page in [(8, 1), (2, 2), (200, 1)]:
                    listing = get(f"/0/data/jobs/{queue}/{registry}/{per_page}/{order}/{page}.json")
                    ids.update(job["id"] for job in listing["jobs"])
    assert {"o-1.timeout.payments", "a:b:c", "pickled", "deep", "no-hash"} <= ids
    for job_id in sorted(ids):
        expected = 200 if redis.exists(KEYS.job(job_id)) else 404
        get(f"/0/view/job/{quote(job_id, safe='')}", expected)
        get(f"/0/data/job/{quote(job_id, safe='')}.json", expected)
    return seen


def test_every_page_answers_during_a_live_order_flow_with_garbage_in_redis(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    with SmtpSink(port=0, redis=redis, keys=OrderKeys()) as sink:
        settings = flow_settings(redis_url, sink.port, saga=SagaConfig(step_timeout=600))
        services = build_services(redis, settings)
        for sku, (on_hand, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, on_hand, price)
        env = {"smtp__port": sink.port, "saga__step_timeout": 600}
        queues = ["orders", "inventory", "payments", "notifications"]  # not shipping: orders stay in flight
        order_worker = WorkerProcess(
            redis_url, "--queues", *queues, "--concurrency", "4", app="jobs:registry", **env
        )
        try:
            producer = Producer(redis, settings, jobs.registry, services.orders)
            customer = {"customer_name": "Ada <b>Lovelace</b>", "customer_email": "ada@example.com"}
            placed = [
                producer.place_order(items=[("TEA", 1)], ship_to="1 Test St", **customer) for _ in range(3)
            ]
            placed.append(
                producer.place_order(
                    items=[("MUG", 1)], ship_to="2 Test St", payment_token="tok_declined", **customer
                )
            )
            wait_until(
                lambda: redis.llen("rq:queue:shipping") >= 3, timeout=60, message="orders waiting to ship"
            )
            wait_until(
                lambda: producer.get_order(placed[-1].order_id).status.value == "CANCELLED",  # type: ignore[union-attr]
                timeout=60,
                message="the declined order to be cancelled",
            )
            assert redis.zcard("rq:scheduled:orders") >= 3  # the in-flight orders' step time-outs
            plant_garbage(redis, marker)
            with (
                dashboard_state(redis, redis_url),
                running_dashboard(redis_url, tmp_path / "dashboard.log") as dash,
            ):
                dash.wait_ready()
                seen = crawl(dash, redis)
        finally:
            order_worker.stop()
    wrong = [(path, expected, got) for path, expected, got in seen if got != expected]
    assert wrong == [], wrong
    assert len(seen) > 500 and sum(1 for _, e, _ in seen if e == 404) >= 3
    assert not marker.exists(), "the dashboard unpickled something"
    assert "Traceback" not in dash.output(), dash.output()
