"""The dashboard's Orders section, through Flask's test client, against a running order flow."""

from __future__ import annotations

from typing import Any

from redis import Redis

from chumon.dashboard import Guard, make_app
from tests.flow import running_flow
from tests.support import make_settings, wait_until

HOST = {"Host": "127.0.0.1:9181"}


def client(redis: Redis, redis_url: str, **guard: Any) -> Any:
    values = {"bind": "127.0.0.1", "allowed_hosts": (), "username": None, "password": None, **guard}
    return make_app(redis, make_settings(redis_url), Guard.of(**values)).test_client()


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in walk(child))]


def test_orders_list_and_order_page(redis: Redis, redis_url: str) -> None:
    web = client(redis, redis_url)
    with running_flow(redis, redis_url) as flow:
        confirmed = flow.place(("TEA", 1), payment_token="tok_transient_1")
        cancelled = flow.place(("TEA", 1), ship_to="1 Nowhere Lane, Void", customer_email="bob@example.com")
        for order_id in (confirmed, cancelled):
            flow.settled(order_id)
            wait_until(
                lambda i=order_id: (
                    (s := flow.producer.get_order_summary(i)) and s.version == flow.order(i).version
                )
            )
        page = web.get("/0/view/orders", headers=HOST)
        assert page.status_code == 200 and b'data-page="list"' in page.data
        assert b"/chumon-static/orders.js" in page.data and b">Orders</a>" in page.data
        assert "nonce-" in page.headers["Content-Security-Policy"]
        rows = web.get("/0/data/orders.json", headers=HOST).get_json()["orders"]
        assert {r["order_id"]: r["status"] for r in rows} == {confirmed: "CONFIRMED", cancelled: "CANCELLED"}
        assert all("***@example.com" in r["customer"] for r in rows)  # masked, as the logs are
        assert not any(address in r["customer"] for r in rows for address in ("ada@", "bob@"))
        only = web.get("/0/data/orders.json?status=cancelled", headers=HOST).get_json()["orders"]
        assert [r["order_id"] for r in only] == [cancelled]
        by_customer = web.get("/0/data/orders.json?customer=bob@example.com", headers=HOST).get_json()
        assert [r["order_id"] for r in by_customer["orders"]] == [cancelled]
        assert web.get("/0/data/orders.json?attention=1", headers=HOST).get_json()["orders"] == []

        order = web.get(f"/0/view/orders/{cancelled}", headers=HOST)
        assert order.status_code == 200 and cancelled.encode() in order.data
        data = web.get(f"/0/data/orders/{confirmed}.json", headers=HOST).get_json()
        assert data["status"] == "CONFIRMED" and data["read_model_lag"] == 0
        charge = next(n for n in walk(data["root"]) if n["type"] == "ChargePayment")
        assert charge["job"]["retries"] == 1
        assert charge["job"]["url"] == f"/0/view/job/{charge['job']['job_id']}"
        assert web.get(charge["job"]["url"], headers=HOST).status_code == 200
        data = web.get(f"/0/data/orders/{cancelled}.json", headers=HOST).get_json()
        assert {n["type"] for n in walk(data["root"]) if n["compensation"]} >= {
            "RefundPayment",
            "PaymentRefunded",
        }


def test_unknown_and_malformed_orders_are_404(redis: Redis, redis_url: str) -> None:
    web = client(redis, redis_url)
    assert web.get("/0/data/orders/nope.json", headers=HOST).status_code == 404
    assert web.get("/0/data/orders/a.b.json", headers=HOST).status_code == 404
    assert web.get("/0/view/orders/%3Cscript%3E", headers=HOST).status_code == 404
    assert web.get("/1/view/orders", headers=HOST).status_code == 404
    assert (
        web.get("/0/data/orders.json?limit=abc&status=<x>", headers=HOST).get_json()["filters"]["status"]
        == ""
    )


def test_the_orders_section_is_behind_the_same_guard(redis: Redis, redis_url: str) -> None:
    web = client(redis, redis_url, username="ops", password="secret")
    assert web.get("/0/view/orders", headers=HOST).status_code == 401
    assert web.get("/0/data/orders.json", headers=HOST).status_code == 401
    assert web.get("/0/view/orders", headers={"Host": "evil.example"}).status_code == 403
