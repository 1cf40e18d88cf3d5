"""The dashboard's Orders section: the read model's orders list, and one order's saga as a timeline.

Served by the same app as the job pages, so the same guard checks every request (Host,
basic auth, CSP with a nonce, no-store); there are no actions here, only reads. The pages
are shells; ``static/orders.js`` fetches their JSON every 2.5 s (while Autorefresh is on)
and builds the DOM with ``textContent`` only, so nothing from Redis is ever parsed as
markup. Every JSON answer is masked as the logs are (emails, payment tokens).

- ``/0/view/orders``: the orders list from the read model (orders/readmodel.py), newest
  first, filtered by status, by "needs attention", by customer email;
- ``/0/view/orders/<id>``: the order's causation tree (orders/trace.py, as ``chumon
  trace`` prints it): every command with the job that carried it (attempts, retries,
  next try, dead letter; a link to the job's page), every event under its cause,
  compensations marked, the read model's lag for the order, and the outcome.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, abort, request, url_for

from chumon.dashboard import views
from chumon.logs import mask
from chumon.trace import command_names
from orders.errors import CorruptOrder
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.money import format_amount
from orders.projection import OrderSummary
from orders.readmodel import ReadModel
from orders.trace import build

blueprint = Blueprint("chumon_orders", __name__)
ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
STATUSES = ("pending", "confirmed", "cancelled")
LIMIT_MAX = 500


def keys() -> OrderKeys:
    return OrderKeys(views.context().settings.key_prefix)


def masked(data: Any) -> Any:
    """``data`` as the JSON answers carry it: masked as the logs are."""
    return json.loads(mask(json.dumps(data, default=str)))


def existing_order(order_id: str) -> str:
    if not ORDER_ID.match(order_id):
        abort(404)
    return order_id


# -- pages --------------------------------------------------------------------------------------------
@blueprint.route("/<int:instance_number>/view/orders")
def orders_page(instance_number: int) -> str:
    views.instance(instance_number)
    return views.render_page(
        "chumon/orders.html",
        active_tab="orders",
        statuses=STATUSES,
        chosen=filters(),
        data_url=url_for(".orders_data", instance_number=0),
    )


@blueprint.route("/<int:instance_number>/view/orders/<order_id>")
def order_page(instance_number: int, order_id: str) -> str:
    views.instance(instance_number)
    existing_order(order_id)
    return views.render_page(
        "chumon/order.html",
        active_tab="orders",
        order_id=order_id,
        data_url=url_for(".order_data", instance_number=0, order_id=order_id),
        list_url=url_for(".orders_page", instance_number=0),
    )


# -- data -----------------------------------------------------------------------------------------------
def filters() -> dict[str, Any]:
    status = request.args.get("status", "")
    limit = request.args.get("limit", "50")
    return {
        "status": status if status in STATUSES else "",
        "attention": request.args.get("attention") == "1",
        "customer": request.args.get("customer", "")[:200].strip(),
        "limit": min(int(limit), LIMIT_MAX) if limit.isdigit() and int(limit) > 0 else 50,
    }


@blueprint.route("/<int:instance_number>/data/orders.json")
def orders_data(instance_number: int) -> Response:
    views.instance(instance_number)
    chosen = filters()
    view = ReadModel(views.reader().redis, keys())
    status = OrderStatus(chosen["status"].upper()) if chosen["status"] else None
    wanted = LIMIT_MAX if chosen["attention"] else chosen["limit"]
    found = view.query(customer=chosen["customer"] or None, status=status, limit=wanted)
    if chosen["attention"]:
        found = [o for o in found if o.attention or o.unreadable][: chosen["limit"]]
    return views.answer({"orders": [row(o) for o in found], "filters": chosen})


def row(order: OrderSummary) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "url": url_for(".order_page", instance_number=0, order_id=order.order_id),
        "status": order.status.value,
        "reason": order.reason,
        "attention": order.attention or order.unreadable_note,
        "customer": f"{order.customer_name} <{order.customer_email}>",
        "items": order.item_count,
        "total": format_amount(order.total, order.currency),
        "placed_at": order.placed_at,
        "updated_at": order.updated_at,
        "version": order.version,
    }


@blueprint.route("/<int:instance_number>/data/orders/<order_id>.json")
def order_data(instance_number: int, order_id: str) -> Response:
    views.instance(instance_number)
    existing_order(order_id)
    try:
        trace = build(views.reader().redis, keys(), order_id, command_names())
    except CorruptOrder as exc:
        return views.answer({"status": "ERROR", "message": str(exc)}, 500)
    if trace is None:
        return views.answer({"status": "ERROR", "message": "no such order"}, 404)
    data = trace.model_dump(mode="json")
    data["read_model_lag"] = trace.read_model_lag
    link_jobs(data["root"])
    return views.answer(data)


def link_jobs(node: dict[str, Any]) -> None:
    """Give every job its dashboard page's URL (built here: the page never builds a URL from data)."""
    if node.get("job"):
        node["job"]["url"] = url_for("rq_dashboard.job_view", instance_number=0, job_id=node["job"]["job_id"])
    for child in node["children"]:
        link_jobs(child)
