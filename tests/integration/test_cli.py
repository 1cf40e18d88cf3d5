"""The command line, in-process, against the test Redis."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from chumon import cli
from chumon.settings import load
from orders.keys import OrderKeys
from orders.projector import Projector
from orders.readmodel import ReadModel
from tests.apps import sample
from tests.support import make_settings
from workers import Control, EnqueueOptions, Enqueuer
from workers.joblog import set_sink


@pytest.fixture(autouse=True)
def environment(redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """cli.main configures the process's logging: put it back, so later tests are unaffected."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    load.cache_clear()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    load.cache_clear()
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and code == 0 else out
    return code, data, err


def test_stock_set_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, level, _ = run(capsys, "stock", "set", "TEA-01", "12", "--price", "4.50", "--json")
    assert code == 0 and (level["on_hand"], level["price"], level["available"]) == (12, 450, 12)
    code, levels, _ = run(capsys, "stock", "show", "--json")
    assert code == 0 and [lv["sku"] for lv in levels] == ["TEA-01"]
    code, text, _ = run(capsys, "stock", "show")
    assert code == 0 and "TEA-01" in text and "EUR 4.50" in text


def test_stock_set_refuses_bad_input(capsys: pytest.CaptureFixture[str], redis: Redis) -> None:
    code, _, err = run(capsys, "stock", "set", "NEW-SKU", "5")
    assert code == 2 and "NEW-SKU" in err and "price" in err
    with pytest.raises(SystemExit):
        run(capsys, "stock", "set", "TEA-01", "5", "--price", "1.234")
    assert redis.dbsize() == 0


def test_order_place_show_and_list(capsys: pytest.CaptureFixture[str], redis: Redis) -> None:
    run(capsys, "stock", "set", "TEA-01", "12", "--price", "4.50")
    code, placed, _ = run(
        capsys, "order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
        "--item", "TEA-01:2", "--idempotency-key", "k1", "--json",
    )  # fmt: skip
    assert code == 0 and placed["created"]
    code, again, _ = run(
        capsys, "order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
        "--item", "TEA-01:2", "--idempotency-key", "k1", "--json",
    )  # fmt: skip
    assert again == {"order_id": placed["order_id"], "created": False, "already_placed": True}
    code, order, _ = run(capsys, "order", "show", placed["order_id"], "--json")
    assert code == 0 and order["status"] == "PENDING" and order["total"] == 900
    assert order["saga"]["current"] == "reserve_inventory" and "payment_token" not in json.dumps(order)
    code, text, err = run(capsys, "order", "show", placed["order_id"])
    assert "not in the read model yet" in err  # no projector has run: the write side answers
    assert "waiting for reserve_inventory" in text and "EUR 9.00" in text
    code, orders, _ = run(capsys, "order", "list", "--status", "pending", "--json")
    assert orders == []  # lists come from the read model only
    projector = Projector(redis, OrderKeys(), ReadModel(redis, OrderKeys()))
    projector.reader.ensure_group()
    assert projector.step() == 1
    code, orders, _ = run(capsys, "order", "list", "--status", "pending", "--json")
    assert [o["order_id"] for o in orders] == [placed["order_id"]]
    code, orders, _ = run(capsys, "order", "list", "--customer", "ada@example.com", "--json")
    assert len(orders) == 1 and orders[0]["total"] == 900
    code, orders, _ = run(capsys, "order", "list", "--status", "confirmed", "--json")
    assert orders == []
    code, text, _ = run(capsys, "order", "show", placed["order_id"])
    assert "placed: 2 item(s), EUR 9.00" in text
    code, status, _ = run(capsys, "projections", "status", "--json")
    assert status["orders"] == 1 and status["lag_events"] == 0


def test_order_place_refuses_invalid_orders_naming_the_problem(
    capsys: pytest.CaptureFixture[str], redis: Redis
) -> None:
    run(capsys, "stock", "set", "TEA-01", "12", "--price", "4.50")
    before = redis.dbsize()
    code, _, err = run(
        capsys, "order", "place", "--customer-email", "nope", "--customer-name", "Ada", "--item", "TEA-01:1"
    )
    assert code == 2 and "customer.email" in err
    code, _, err = run(
        capsys,
        "order",
        "place",
        "--customer-email",
        "a@example.com",
        "--customer-name",
        "Ada",
        "--item",
        "XX:1",
    )
    assert code == 2 and "unknown SKU 'XX'" in err
    with pytest.raises(SystemExit):
        run(
            capsys,
            "order",
            "place",
            "--customer-email",
            "a@example.com",
            "--customer-name",
            "A",
            "--item",
            "TEA",
        )
    assert redis.dbsize() == before


def test_runtime_commands_print_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, dead, _ = run(capsys, "dlq", "list", "--json")
    assert code == 0 and dead == []
    code, queues, _ = run(capsys, "queues", "--json")
    assert code == 0 and queues == []
    code, _, err = run(capsys, "job", "show", "no-such-job")
    assert code == 1 and "no job" in err


def test_queues_pause_resume_and_job_cancel_from_the_command_line(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHUMON_QUEUE_RATE_LIMITS", "q=5/s")
    settings = make_settings(redis_url)
    enqueuer = Enqueuer(redis, settings)
    plain = enqueuer.enqueue(sample.record, {"name": "plain"})
    ranked = enqueuer.enqueue(sample.record, {"name": "ranked"}, options=EnqueueOptions(priority=2))

    code, report, _ = run(capsys, "queues", "pause", "q", "--json")
    assert code == 0 and report == {"paused": ["q"], "unchanged": []}
    code, report, _ = run(capsys, "queues", "pause", "q", "--json")
    assert code == 0 and report == {"paused": [], "unchanged": ["q"]}  # idempotent, and says so
    assert Control(redis, settings).paused() == {"q"}
    code, rows, _ = run(capsys, "queues", "--json")
    (row,) = [r for r in rows if r["queue"] == "q"]
    assert (row["paused"], row["queued"], row["prioritized"], row["rate_limit"]) == (True, 1, 1, "5/1s")
    code, text, _ = run(capsys, "queues")
    assert code == 0 and "PAUSED" in text and "limit 5/1s" in text

    code, results, _ = run(capsys, "job", "cancel", plain, ranked, "--json")
    assert code == 0 and [r["action"] for r in results] == ["removed", "removed"]
    code, text, err = run(capsys, "job", "cancel", plain, "no-such-job")
    assert code == 1 and "already canceled" in text and "no such job" in text
    code, rows, _ = run(capsys, "queues", "--json")
    (row,) = [r for r in rows if r["queue"] == "q"]
    assert (row["queued"], row["prioritized"]) == (0, 0)

    code, report, _ = run(capsys, "queues", "resume", "q", "--json")
    assert code == 0 and report == {"resumed": ["q"], "unchanged": []}
    assert Control(redis, settings).paused() == set()
    code, _, err = run(capsys, "queues", "pause", "bad name!")
    assert code == 2 and "QUEUE" in err and "Traceback" not in err
