"""The order flow's commands: ``stock set|show`` and ``order place|show|list``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from pydantic import ValidationError

from chumon.bootstrap import order_service
from chumon.settings import Settings
from orders.errors import UnknownSku
from orders.inventory import Inventory, StockLevel
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.money import format_amount, parse_amount
from orders.saga import COMPENSATION_NAMES
from orders.views import OrderDetails
from producer import Producer
from workers.cli import CliContext, emit, table


def _settings(ctx: CliContext) -> Settings:
    assert isinstance(ctx.settings, Settings)
    return ctx.settings


def _producer(ctx: CliContext) -> Producer:
    settings = _settings(ctx)
    redis = ctx.redis()
    return Producer(redis, settings, ctx.registry(None), order_service(redis, settings))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def parse_item(text: str) -> tuple[str, int]:
    sku, sep, quantity = text.rpartition(":")
    if not sep or not sku or not quantity.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not SKU:QUANTITY (e.g. TEA-01:2)")
    return sku, int(quantity)


def price(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- stock --------------------------------------------------------------------------------------
def render_levels(levels: list[StockLevel], currency: str) -> str:
    if not levels:
        return "no stock"
    rows = [
        (
            lv.sku,
            lv.on_hand,
            lv.reserved,
            lv.available,
            lv.committed,
            format_amount(lv.price, currency) if lv.price is not None else "-",
        )
        for lv in levels
    ]
    return table(rows, ["sku", "on hand", "reserved", "available", "sold", "price"])


def cmd_stock_set(args: argparse.Namespace, ctx: CliContext) -> int:
    inventory = Inventory(ctx.redis(), OrderKeys(ctx.settings.key_prefix))
    try:
        level = inventory.set_stock(args.sku, args.quantity, args.price)
    except ValueError as exc:
        print(f"chumon: {exc}", file=sys.stderr)
        return 2
    emit(level, args.json, lambda lv: render_levels([lv], _settings(ctx).saga.currency))
    return 0


def cmd_stock_show(args: argparse.Namespace, ctx: CliContext) -> int:
    levels = Inventory(ctx.redis(), OrderKeys(ctx.settings.key_prefix)).levels(args.sku)
    if args.sku and not levels:
        print(f"chumon: unknown SKU {args.sku!r}", file=sys.stderr)
        return 1
    emit(levels, args.json, lambda lvs: render_levels(lvs, _settings(ctx).saga.currency))
    return 0


# -- orders -------------------------------------------------------------------------------------
def cmd_order_place(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        placed = _producer(ctx).place_order(
            customer_name=args.customer_name,
            customer_email=args.customer_email,
            items=args.items,
            ship_to=args.ship_to,
            payment_token=args.payment_token,
            idempotency_key=args.idempotency_key,
        )
    except (ValidationError, UnknownSku) as exc:
        print(f"chumon: order refused, nothing was written:\n{exc}", file=sys.stderr)
        return 2
    result = {"order_id": placed.order_id, "created": placed.created}
    emit(result, args.json, lambda r: r["order_id"])
    return 0


def render_order(order: OrderDetails) -> str:
    saga = order.saga
    lines = [
        f"order {order.id}  {order.status.value}" + (f"  ({order.reason})" if order.reason else ""),
    ]
    if order.attention:
        lines.append(f"  NEEDS ATTENTION: {order.attention}")
    lines += [
        f"  customer  {order.customer.name} <{order.customer.email}>",
        f"  ship to   {order.ship_to}",
        f"  placed    {_when(order.placed_at)}   updated {_when(order.updated_at)}   version {order.version}",
    ]
    for line in order.lines:
        lines.append(
            f"  {line.quantity:>4} x {line.sku:<16} {format_amount(line.unit_price, order.currency):>14}"
            f"  {format_amount(line.total, order.currency):>14}"
        )
    lines.append(f"  total {format_amount(order.total, order.currency):>44}")
    done = ", ".join(s.value for s in saga.completed) or "none"
    undone = ", ".join(COMPENSATION_NAMES[s] for s in saga.compensated) or "none"
    lines += [
        f"  saga      {saga.status.value}" + (f", waiting for {saga.current.value}" if saga.current else ""),
        f"  steps done      {done}",
        f"  compensations   {undone}"
        + (f" (running: {COMPENSATION_NAMES[saga.compensating]})" if saga.compensating else ""),
    ]
    if saga.failure:
        lines.append(f"  failure   {saga.failed_step.value if saga.failed_step else '?'}: {saga.failure}")
    emails = ", ".join(f"{kind} {mid}" for kind, mid in order.emails.items()) or "none yet"
    lines.append(f"  emails    {emails}")
    lines.append("  history")
    lines += [f"    {_when(at)}  {text}" for at, text in saga.history]
    return "\n".join(lines)


def cmd_order_show(args: argparse.Namespace, ctx: CliContext) -> int:
    order = _producer(ctx).get_order(args.order_id)
    if order is None:
        print(f"chumon: no order {args.order_id}", file=sys.stderr)
        return 1
    emit(order.public(), args.json, lambda _: render_order(order))
    return 0


def order_row(order: OrderDetails) -> tuple[Any, ...]:
    status = order.status.value + (" (attention)" if order.attention else "")
    return (
        order.id,
        status,
        order.customer.name,
        sum(line.quantity for line in order.lines),
        format_amount(order.total, order.currency),
        (order.reason or order.attention or "")[:50],
    )


def cmd_order_list(args: argparse.Namespace, ctx: CliContext) -> int:
    wanted = args.status.upper() if args.status else None
    status = OrderStatus(wanted) if wanted and wanted != "NEEDS_ATTENTION" else None
    orders = _producer(ctx).recent_orders(status=status, limit=args.limit)
    if wanted == "NEEDS_ATTENTION":
        orders = [o for o in orders if o.attention]
    emit(
        [o.public() for o in orders],
        args.json,
        lambda _: (
            table([order_row(o) for o in orders], ["order", "status", "customer", "items", "total", "why"])
            if orders
            else "no orders"
        ),
    )
    return 0


def register(sub: Any) -> None:
    stock = sub.add_parser("stock", help="the catalogue and its stock").add_subparsers(
        dest="stock_command", required=True
    )
    stock_set = stock.add_parser("set", help="set a SKU's units on hand (and price)")
    stock_set.add_argument("sku")
    stock_set.add_argument("quantity", type=int)
    stock_set.add_argument("--price", type=price, help="unit price, e.g. 19.99")
    stock_set.add_argument("--json", action="store_true")
    stock_set.set_defaults(func=cmd_stock_set)
    stock_show = stock.add_parser("show", help="stock levels")
    stock_show.add_argument("sku", nargs="?")
    stock_show.add_argument("--json", action="store_true")
    stock_show.set_defaults(func=cmd_stock_show)

    order = sub.add_parser("order", help="orders").add_subparsers(dest="order_command", required=True)
    place = order.add_parser("place", help="place an order; prints its id")
    place.add_argument("--customer-email", required=True)
    place.add_argument("--customer-name", required=True)
    place.add_argument(
        "--item", dest="items", type=parse_item, action="append", required=True, metavar="SKU:QTY"
    )
    place.add_argument("--ship-to", default="1 Main Street, Springfield", help="delivery address")
    place.add_argument("--payment-token", default="tok_ok", help="tok_ok, tok_declined, tok_transient_2, ...")
    place.add_argument("--idempotency-key", help="a double submit with the same key gives the same order")
    place.add_argument("--json", action="store_true")
    place.set_defaults(func=cmd_order_place)
    show = order.add_parser("show", help="one order: status, saga, emails")
    show.add_argument("order_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_order_show)
    listing = order.add_parser("list", help="recent orders")
    listing.add_argument("--status", choices=["pending", "confirmed", "cancelled", "needs_attention"],
                         type=str.lower)  # fmt: skip
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_order_list)
