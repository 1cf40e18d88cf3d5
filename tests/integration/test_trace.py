"""``chumon trace`` and ``chumon tail`` against a running flow, in both saga styles."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import pytest
from redis import Redis

from chumon import cli
from orders.keys import OrderKeys
from orders.trace import Node
from tests.flow import running_flow
from tests.support import wait_until
from workers.codec import texts


@pytest.fixture(autouse=True)
def environment(cli_environment: None) -> None:
    """Commands run in-process against the suite's Redis (tests/conftest.py)."""


def trace(capsys: pytest.CaptureFixture[str], order_id: str, *extra: str) -> tuple[int, Any]:
    code = cli.main(["trace", order_id, *extra])
    out, _err = capsys.readouterr()
    return code, json.loads(out) if "--json" in extra and code == 0 else out


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in walk(child))]


def parent_of(root: dict[str, Any], kind: str) -> dict[str, Any]:
    for node in walk(root):
        if any(child["type"] == kind for child in node["children"]):
            return node
    raise AssertionError(f"no {kind} in the tree")


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_trace_links_every_message_to_its_cause(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str, style: str
) -> None:
    with running_flow(redis, redis_url, style=style) as flow:
        retried = flow.place(("TEA", 1), payment_token="tok_transient_1")
        refused = flow.place(("TEA", 1), ship_to="1 Nowhere Lane, Void")
        flow.settled(retried)
        flow.settled(refused)
        wait_until(
            lambda: (
                (s := flow.producer.get_order_summary(refused)) and s.version == flow.order(refused).version
            )
        )
        code, data = trace(capsys, retried, "--json")
        assert code == 0
        nodes = walk(data["root"])
        events = [n for n in nodes if n["kind"] == "event"]
        commands = [n for n in nodes if n["kind"] == "command"]
        assert sorted(n["seq"] for n in events) == list(range(1, data["version"] + 1))  # every event, once
        assert not [n for n in nodes if n["cause_missing"]]
        for node in nodes[1:]:  # every message hangs under its cause, or under the request if it has none
            parent = parent_of(data["root"], node["type"])
            assert node["causation_id"] in (None, parent["id"], (parent.get("job") or {}).get("job_id"))
        charge = next(n for n in commands if n["type"] == "ChargePayment")
        assert charge["job"]["retries"] == 1 and charge["job"]["status"] == "finished"
        assert "GatewayUnavailable" in charge["job"]["failures"][0]
        assert "s later)" in charge["job"]["failures"][0]  # the back-off it waited
        assert any(child["type"] == "PaymentCharged" for child in charge["children"])  # the handler's answer
        assert data["status"] == "CONFIRMED"
        if style == "choreographed":  # the service reacted to the event: the command hangs under it
            assert parent_of(data["root"], "ChargePayment")["type"] == "InventoryReserved"
        else:  # the orchestrator sent it on the reservation command's answer
            assert parent_of(data["root"], "ChargePayment")["type"] == "ReserveInventory"

        code, data = trace(capsys, refused, "--json")
        nodes = walk(data["root"])
        assert data["status"] == "CANCELLED" and data["read_model_version"] == data["version"]
        compensations = [n["type"] for n in nodes if n["compensation"]]
        assert "RefundPayment" in compensations and "ReleaseInventory" in compensations
        assert "PaymentRefunded" in compensations and "InventoryReleased" in compensations

        code, text = trace(capsys, refused)
        assert code == 0
        assert "ShipmentFailed" in text and "(compensation)" in text and "outcome: cancelled" in text


def test_trace_of_an_unknown_order_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["trace", "nope"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.strip() == "chumon: no order 'nope'"


def test_tail_follows_events_and_jobs_across_orders(redis: Redis, redis_url: str) -> None:
    from chumon.trace import tail

    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    with running_flow(redis, redis_url) as flow:
        follower = threading.Thread(
            target=tail,
            args=(redis, OrderKeys(), seen.append, stop),
            kwargs={"from_start": True},
            daemon=True,
        )
        follower.start()
        ids = [flow.place(("TEA", 1)) for _ in range(2)]
        for order_id in ids:
            flow.settled(order_id)
        wait_until(
            lambda: {i["order_id"] for i in seen if i.get("type") == "OrderConfirmed"} == set(ids),
            message="both confirmations in the tail",
        )
        stop.set()
        follower.join(timeout=10)
    for order_id in ids:
        mine = [i for i in seen if i["order_id"] == order_id]
        assert next(i["type"] for i in mine if i["kind"] == "event") == "OrderPlaced"
        assert {i["job_type"] for i in mine if i["kind"] == "job"} >= {"inventory.reserve", "payments.charge"}


def test_node_walk_is_depth_first() -> None:
    leaf = Node(kind="event", id="b", type="B", at=2)
    root = Node(
        kind="request",
        id="",
        type="PlaceOrder",
        at=1,
        children=[Node(kind="command", id="a", type="A", at=1, children=[leaf])],
    )
    assert [n.id for n in root.walk()] == ["", "a", "b"]


def test_consumers_is_the_process_new_name_and_events_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    from chumon.cli import build_parser

    for name in ("consumers", "events"):
        args = build_parser().parse_args([name, "--metrics-port", "0"])
        assert args.command == name and args.func.__name__ == "cmd_events"
        assert cli.main([name, "dlq", "list", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []


def test_trace_of_a_corrupt_order_is_one_line(capsys: pytest.CaptureFixture[str], redis: Redis) -> None:
    redis.hset(OrderKeys().order("broken"), mapping={"doc": "{not json", "version": "x"})
    code = cli.main(["trace", "broken"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("chumon: order 'broken': its stored record cannot be read") and err.count("\n") == 1


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_trace_finds_an_orders_jobs_in_its_index_without_scanning(
    capsys: pytest.CaptureFixture[str],
    redis: Redis,
    redis_url: str,
    style: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every job whose payload names the order (the step jobs, compensations, emails, a dead
    letter's notice) is in the order's job index, written with the jobs; the trace reads it and
    never scans. An order without an index (placed by an older version) is still found by SCAN."""
    import jobs
    from orders import trace as trace_module

    charge = jobs.registry.find("payments.charge")
    assert charge is not None and charge.retry is not None
    fast = charge.retry.model_copy(update={"base": 0.05, "cap": 1.0})  # to its dead letter quickly
    monkeypatch.setitem(jobs.registry._types, "payments.charge", replace(charge, retry=fast))
    keys = OrderKeys()
    with running_flow(redis, redis_url, style=style) as flow:
        refused = flow.place(("TEA", 1), ship_to="1 Nowhere Lane, Void")  # compensations
        dead = flow.place(("TEA", 1), payment_token="tok_timeout")  # a dead letter and its notice
        flow.settled(refused)
        flow.settled(dead, timeout=40)
        for order_id in (refused, dead):
            indexed = set(texts(redis.smembers(keys.order_jobs(order_id))))
            scanned = {job.id for job in trace_module.scanned_jobs(redis, keys, order_id)}
            assert scanned and scanned <= indexed, scanned - indexed
            assert redis.ttl(keys.order_jobs(order_id)) > 0

        def no_scan(*args: Any) -> Any:
            raise AssertionError("the trace scanned the keyspace")

        with monkeypatch.context() as patch:
            patch.setattr(trace_module, "scanned_jobs", no_scan)
            code, data = trace(capsys, dead, "--json")
        assert code == 0
        found = {n["job"]["job_id"] for n in walk(data["root"]) if n.get("job")}
        assert "orders.dead_letter" in {n["job"]["job_type"] for n in walk(data["root"]) if n.get("job")}
        assert found == scanned_ids(redis, keys, dead)

        redis.delete(keys.order_jobs(dead))  # as an order placed before the index
        code, data = trace(capsys, dead, "--json")
        assert {n["job"]["job_id"] for n in walk(data["root"]) if n.get("job")} == found


def scanned_ids(redis: Redis, keys: OrderKeys, order_id: str) -> set[str]:
    from orders.trace import scanned_jobs

    return {job.id for job in scanned_jobs(redis, keys, order_id)}
