"""The command line, in-process, against the test Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from chumon import cli
from orders.keys import OrderKeys
from orders.projector import Projector
from orders.readmodel import ReadModel
from tests.apps import sample
from tests.support import make_settings
from workers import Control, EnqueueOptions, Enqueuer


@pytest.fixture(autouse=True)
def environment(cli_environment: None) -> None:
    """Commands run in-process against the suite's Redis (tests/conftest.py)."""


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
        "--item", "TEA-01:2", "--ship-to", "12 Analytical Lane", "--idempotency-key", "k1", "--json",
    )  # fmt: skip
    assert code == 0 and placed["created"]
    code, again, _ = run(
        capsys, "order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
        "--item", "TEA-01:2", "--ship-to", "12 Analytical Lane", "--idempotency-key", "k1", "--json",
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
        capsys, "order", "place", "--customer-email", "nope", "--customer-name", "Ada", "--item", "TEA-01:1",
        "--ship-to", "12 Analytical Lane",
    )  # fmt: skip
    assert code == 2 and "--customer-email: value is not a valid email" in err
    assert "customer.email" not in err and "pydantic" not in err and len(err.splitlines()) == 1
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
        "--ship-to",
        "12 Analytical Lane",
    )
    assert code == 2 and "--item: unknown SKU 'XX'" in err
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


def test_order_place_wait_times_out_with_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "stock", "set", "TEA-01", "12", "--price", "4.50")
    code, text, _ = run(
        capsys, "order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
        "--item", "TEA-01:1", "--ship-to", "12 Analytical Lane", "--wait", "--timeout", "0.2",
    )  # fmt: skip
    assert code == 5 and "still PENDING after 0.2 s" in text


def test_projections_status_says_when_no_projector_ever_ran(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "stock", "set", "TEA-01", "12", "--price", "4.50")
    run(
        capsys, "order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
        "--item", "TEA-01:1", "--ship-to", "12 Analytical Lane",
    )  # fmt: skip
    code, status, _ = run(capsys, "projections", "status", "--json")
    assert code == 0 and status["projector_started"] is False and status["lag_events"] == status["events"] > 0
    code, text, _ = run(capsys, "projections", "status")
    assert "no projector has run yet" in text and "chumon consumers" in text


def test_every_option_and_argument_has_help() -> None:
    """`--help` of every command has a line for every option and argument."""
    import argparse

    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction):
                yield path, action

    missing = [f"{path} {a.dest}" for path, a in walk(cli.build_parser(), "chumon") if not a.help]
    assert missing == []


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


def test_app_modules_that_fail_to_import_are_named_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fh_broken_app.py").write_text("def (\n")
    (tmp_path / "fh_failing_app.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "fh_missing_dep_app.py").write_text("import fh_no_such_dependency\n")
    cases = {
        "fh_broken_app": "fh_broken_app failed: SyntaxError: invalid syntax (fh_broken_app.py, line 1)",
        "fh_failing_app": "importing fh_failing_app failed: RuntimeError: boom (at ",
        "fh_missing_dep_app": "no module named 'fh_no_such_dependency'",
    }
    for module, expected in cases.items():
        code, _, err = run(capsys, "worker", "--app", f"{module}:registry", "--burst")
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
