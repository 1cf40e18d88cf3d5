"""The order flow's commands: ``stock set|show`` and ``order place|show|list``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from chumon.bootstrap import order_keys, order_service, order_shards
from chumon.settings import Settings
from orders.errors import CorruptOrder, IdempotencyConflict, OrderTooLarge, UnknownSku
from orders.inventory import Inventory, StockLevel
from orders.model import OrderStatus
from orders.money import format_amount, parse_amount
from orders.projection import OrderSummary
from orders.readmodel import ReadModel
from orders.saga import COMPENSATION_NAMES
from orders.views import OrderDetails
from producer import Producer
from workers import JobRegistry
from workers.cli import CliContext, Exit, NotFound, UsageError, count, emit, seconds, table

PLACE_EXAMPLE = """example:
  chumon stock set TEA-SENCHA 10 --price 4.50
  chumon order place --customer-email ada@example.com --customer-name Ada \\
      --item TEA-SENCHA:2 --item MUG-STONE:1 --ship-to "12 Analytical Lane" --wait

exit status: 0 placed (with --wait: confirmed), 2 refused (nothing written),
4 cancelled, 5 still pending after --timeout, 3 Redis unreachable"""

# the request's fields, as the flags that set them (errors name the flag, not the model's field)
FLAGS = {
    "customer": "--customer-name/--customer-email",
    "name": "--customer-name",
    "email": "--customer-email",
    "lines": "--item",
    "ship_to": "--ship-to",
    "payment_token": "--payment-token",
    "idempotency_key": "--idempotency-key",
}


def _settings(ctx: CliContext) -> Settings:
    assert isinstance(ctx.settings, Settings)
    return ctx.settings


def _producer(ctx: CliContext) -> Producer:
    settings = _settings(ctx)
    redis = ctx.redis()
    # the order commands enqueue nothing by name: they need no app registry (CHUMON_APP may name
    # the user's own jobs, importable only from their folder)
    return Producer(redis, settings, JobRegistry(), order_service(redis, settings))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def parse_item(text: str) -> tuple[str, int]:
    sku, sep, quantity = text.rpartition(":")
    if not sep or not sku or not quantity.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not SKU:QUANTITY (e.g. TEA-01:2)")
    if int(quantity) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the quantity must be at least 1")
    return sku, int(quantity)


def flag_errors(exc: ValidationError) -> str:
    """pydantic's errors as one line per flag: ``--customer-email: value is not a valid email``."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = [part for part in error["loc"] if part != "customer"] or list(error["loc"])
        where = FLAGS.get(str(loc[0]), str(loc[0])) if loc else "the order"
        if where == "--item" and len(loc) > 1 and isinstance(loc[1], int):
            where = f"--item (the {_ordinal(loc[1] + 1)})"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def units(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of units (0 or more)")
    return value


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
    inventory = Inventory(ctx.redis(), order_keys(ctx.redis(), _settings(ctx)))
    try:
        level = inventory.set_stock(args.sku, args.quantity, args.price)
    except ValueError as exc:
        print(f"chumon: {exc}", file=sys.stderr)
        return 2
    emit(level, args.json, lambda lv: render_levels([lv], _settings(ctx).saga.currency))
    return 0


def cmd_stock_show(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        levels = Inventory(ctx.redis(), order_keys(ctx.redis(), _settings(ctx))).levels(args.sku)
    except UnknownSku as exc:
        raise NotFound(f"{exc} (see `chumon stock show`)") from None
    except ValueError as exc:  # not a SKU at all
        raise UsageError(str(exc)) from None
    if args.sku and not levels:
        raise NotFound(f"unknown SKU {args.sku!r} (see `chumon stock show`)")
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
    except ValidationError as exc:
        print(f"chumon: order refused, nothing was written: {flag_errors(exc)}", file=sys.stderr)
        return Exit.USAGE
    except UnknownSku as exc:
        print(f"chumon: order refused, nothing was written: --item: {exc}", file=sys.stderr)
        return Exit.USAGE
    except OrderTooLarge as exc:
        print(f"chumon: order refused, nothing was written: {exc}", file=sys.stderr)
        return Exit.USAGE
    except IdempotencyConflict as exc:
        print(f"chumon: order refused: {exc}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        "order_id": placed.order_id,
        "created": placed.created,
        "already_placed": not placed.created,
    }
    if not placed.created:  # on stderr: stdout stays the bare order id, for scripts
        print(
            f"chumon: already placed: idempotency key {args.idempotency_key!r} gave order "
            f"{placed.order_id} for the same request before; no new order",
            file=sys.stderr,
        )
    if args.wait:
        summary = _producer(ctx).wait_for_order(placed.order_id, timeout=args.timeout)
        result["summary"] = summary.model_dump(mode="json") if summary else None
        if summary is None or summary.status is OrderStatus.PENDING:
            emit(result, args.json, lambda r: f"{r['order_id']} still PENDING after {args.timeout:g} s")
            return Exit.TIMED_OUT
        emit(
            result,
            args.json,
            lambda r: f"{r['order_id']} {summary.status.value} {summary.reason or ''}".rstrip(),
        )
        return Exit.OK if summary.status is OrderStatus.CONFIRMED else Exit.CANCELLED
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
    if saga.late:
        lines.append(f"  late answers    {', '.join(s.value for s in saga.late)} (being undone)")
    if saga.deadline:
        lines.append(
            f"  deadline  {_when(saga.deadline)} (a person is asked to look if nothing moves by then)"
        )
    if saga.failure:
        lines.append(f"  failure   {saga.failed_step.value if saga.failed_step else '?'}: {saga.failure}")
    emails = ", ".join(f"{kind} {mid}" for kind, mid in order.emails.items()) or "none yet"
    lines.append(f"  emails    {emails}")
    lines.append("  history")
    lines += [f"    {_when(at)}  {text}" for at, text in saga.history]
    return "\n".join(lines)


def render_summary(summary: OrderSummary) -> str:
    lines = [
        f"order {summary.order_id}  {summary.status.value}"
        + (f"  ({summary.reason})" if summary.reason else "")
    ]
    if summary.attention:
        lines.append(f"  NEEDS ATTENTION: {summary.attention}")
    if summary.unreadable_note:
        lines.append(f"  NEEDS ATTENTION: {summary.unreadable_note}")
    lines += [
        f"  customer  {summary.customer_name} <{summary.customer_email}>",
        f"  {summary.item_count} item(s), {format_amount(summary.total, summary.currency)}",
        f"  placed    {_when(summary.placed_at)}   updated {_when(summary.updated_at)}",
        f"  version   {summary.version}",
        "  timeline",
    ]
    lines += [f"    {entry.seq:>3}  {_when(entry.at)}  {entry.text}" for entry in summary.timeline]
    return "\n".join(lines)


def cmd_order_show(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        return _show(args, ctx)
    except CorruptOrder as exc:
        print(f"chumon: {exc}", file=sys.stderr)
        return Exit.NOT_FOUND


def _show(args: argparse.Namespace, ctx: CliContext) -> int:
    producer = _producer(ctx)
    if args.consistent:
        order = producer.get_order(args.order_id)
        if order is None:
            print(f"chumon: no order {args.order_id}", file=sys.stderr)
            return 1
        emit(order.public(), args.json, lambda _: render_order(order))
        return 0
    summary = producer.get_order_summary(args.order_id)
    if summary is None:
        placed = producer.get_order(args.order_id)
        if placed is None:
            print(f"chumon: no order {args.order_id}", file=sys.stderr)
            return 1
        print(f"chumon: order {args.order_id} is not in the read model yet; the write side:", file=sys.stderr)
        emit(placed.public(), args.json, lambda _: render_order(placed))
        return 0
    emit(summary, args.json, render_summary)
    return 0


def order_row(order: OrderSummary) -> tuple[Any, ...]:
    flagged = order.attention or order.unreadable_note
    status = order.status.value + (" (attention)" if flagged else "")
    return (
        order.order_id,
        status,
        order.customer_name,
        order.item_count,
        format_amount(order.total, order.currency),
        (order.reason or flagged or "")[:50],
    )


def cmd_order_list(args: argparse.Namespace, ctx: CliContext) -> int:
    wanted = args.status.upper() if args.status else None
    status = OrderStatus(wanted) if wanted and wanted != "NEEDS_ATTENTION" else None
    limit = args.limit if wanted != "NEEDS_ATTENTION" else 10_000
    orders = _producer(ctx).list_orders(customer=args.customer, status=status, limit=limit)
    if wanted == "NEEDS_ATTENTION":
        orders = [o for o in orders if o.attention or o.unreadable][: args.limit]
    headers = ["order", "status", "customer", "items", "total", "why"]
    emit(
        orders, args.json, lambda _: table([order_row(o) for o in orders], headers) if orders else "no orders"
    )
    return 0


def cmd_projections_rebuild(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon.progress import Progress
    from orders.projector import rebuild

    settings, redis = _settings(ctx), ctx.redis()
    shards = order_shards(redis, settings).all()  # on Redis Cluster, each shard's read model in turn
    total = sum(int(redis.xlen(keys.events)) for keys in shards)
    progress = Progress(total, "events replayed", stream=sys.stderr)
    done = 0
    reports = []
    for keys in shards:
        report = rebuild(
            redis,
            keys,
            ReadModel(redis, keys),
            keep_old=args.keep_old,
            progress=_offset(progress.update, done),
        )
        done += report.events
        reports.append({**vars(report), "shard": keys.shard})
    progress.close()

    def line(r: dict[str, Any]) -> str:
        where = f"shard {r['shard']}: " if r["shard"] else ""
        return (
            f"{where}rebuilt generation {r['new']} from {r['events']} events ({r['orders']} orders, "
            f"{r['carried_over']} carried over) in {r['seconds']} s; it replaced generation {r['old']}"
        )

    if len(reports) == 1:
        single = {k: v for k, v in reports[0].items() if k != "shard"}
        emit(single, args.json, lambda _: line(reports[0]))
    else:
        emit({"shards": reports}, args.json, lambda _: "\n".join(line(r) for r in reports))
    return 0


def _offset(update: Callable[[int], object], before: int) -> Callable[[int], None]:
    """A progress callback counting on from ``before`` (the shards replayed so far)."""

    def counted(n: int) -> None:
        update(before + n)

    return counted


def cmd_projections_status(args: argparse.Namespace, ctx: CliContext) -> int:
    from orders.projector import GROUP
    from workers.streams import GroupReader

    settings, redis = _settings(ctx), ctx.redis()
    shards: list[dict[str, Any]] = []
    for keys in order_shards(redis, settings).all():  # on Redis Cluster, each shard's read model
        view = ReadModel(redis, keys)
        behind, lag = GroupReader(redis, keys.events, GROUP).lag()
        ran = _group_exists(redis, keys.events, GROUP)
        events = int(redis.xlen(keys.events))
        if not ran:
            behind = events  # no projector has read anything yet: every event waits
        current = view.current(fresh=True)
        shards.append({
            "shard": keys.shard,
            "current_generation": current,
            "generations": view.active(),
            "events": events,
            "orders": int(redis.zcard(keys.view_all(current))),
            "projector_started": ran,
            "lag_events": behind,
            "lag_seconds": round(lag, 3),
        })  # fmt: skip
    status: dict[str, Any] = {k: v for k, v in shards[0].items() if k != "shard"}
    if len(shards) > 1:  # the shards added up; each one's own below
        status.update(
            events=sum(x["events"] for x in shards),
            orders=sum(x["orders"] for x in shards),
            projector_started=all(x["projector_started"] for x in shards),
            lag_events=sum(x["lag_events"] for x in shards),
            lag_seconds=max(x["lag_seconds"] for x in shards),
            shards=shards,
        )

    def render(s: dict[str, Any]) -> str:
        head = f"generation {s['current_generation']}: {s['orders']} orders from {s['events']} events; "
        if not s["projector_started"]:
            return (
                head
                + f"no projector has run yet ({s['lag_events']} events waiting): start `chumon consumers`"
            )
        return head + f"projector {s['lag_events']} events ({s['lag_seconds']} s) behind"

    emit(status, args.json, render)
    return 0


def _group_exists(redis: Any, stream: str, group: str) -> bool:
    from redis.exceptions import ResponseError

    try:
        groups: Any = redis.xinfo_groups(stream)
    except ResponseError:  # no stream yet
        return False
    return any((g["name"].decode() if isinstance(g["name"], bytes) else g["name"]) == group for g in groups)


# what runs on Redis Cluster (chumon/cli.py asks): the rest reads one Redis's keys
for _command in (cmd_stock_set, cmd_stock_show, cmd_order_place, cmd_order_show, cmd_order_list,
                 cmd_projections_rebuild, cmd_projections_status):  # fmt: skip
    _command.on_cluster = True  # type: ignore[attr-defined]


def register(sub: Any) -> None:
    stock = sub.add_parser("stock", help="the catalogue and its stock").add_subparsers(
        dest="stock_command", required=True
    )
    stock_set = stock.add_parser("set", help="set a SKU's units on hand (and price)")
    stock_set.add_argument("sku", help="the SKU, e.g. TEA-SENCHA")
    stock_set.add_argument("quantity", type=units, help="units on hand (0 or more)")
    stock_set.add_argument("--price", type=price, help="unit price, e.g. 19.99 (required for a new SKU)")
    stock_set.add_argument("--json", action="store_true", help="print JSON")
    stock_set.set_defaults(func=cmd_stock_set)
    stock_show = stock.add_parser("show", help="stock levels")
    stock_show.add_argument("sku", nargs="?", help="one SKU (default: every SKU)")
    stock_show.add_argument("--json", action="store_true", help="print JSON")
    stock_show.set_defaults(func=cmd_stock_show)

    order = sub.add_parser("order", help="orders").add_subparsers(dest="order_command", required=True)
    place = order.add_parser(
        "place",
        help="place an order; prints its id",
        description="Place an order and print its id (with --wait: its outcome).",
        epilog=PLACE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    place.add_argument("--customer-email", required=True, help="where the confirmation email goes")
    place.add_argument("--customer-name", required=True, help="the customer's name")
    place.add_argument(
        "--item",
        dest="items",
        type=parse_item,
        action="append",
        required=True,
        metavar="SKU:QTY",
        help="a line of the order; repeat it for each line: --item TEA-SENCHA:2 --item MUG-STONE:1",
    )
    place.add_argument("--ship-to", required=True, metavar="ADDRESS", help="the delivery address")
    place.add_argument("--payment-token", default="tok_ok", help="tok_ok, tok_declined, tok_transient_2, ...")
    place.add_argument(
        "--idempotency-key",
        help="per customer: the same key with the same request gives the same order; with another "
        "request it is refused",
    )
    place.add_argument(
        "--wait",
        action="store_true",
        help="wait until the order is confirmed (exit 0) or cancelled (exit 4); needs `chumon consumers`",
    )
    place.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds --wait waits (default 30), then exit 5"
    )
    place.add_argument("--json", action="store_true", help="print JSON")
    place.set_defaults(func=cmd_order_place)
    show = order.add_parser("show", help="one order: status, reason, timeline (from the read model)")
    show.add_argument("order_id", help="the order's id (order place printed it)")
    show.add_argument(
        "--consistent", action="store_true", help="read the write side: saga steps, compensations"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_order_show)
    listing = order.add_parser("list", help="recent orders")
    listing.add_argument("--status", choices=["pending", "confirmed", "cancelled", "needs_attention"],
                         type=str.lower, help="only orders in this state")  # fmt: skip
    listing.add_argument("--customer", metavar="EMAIL", help="orders of one customer")
    listing.add_argument(
        "--limit", type=count, default=50, help="at most this many, newest first (default 50)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_order_list)

    projections = sub.add_parser("projections", help="the read model").add_subparsers(
        dest="projections_command", required=True
    )
    rebuild = projections.add_parser("rebuild", help="replay the event log into a fresh view and swap it in")
    rebuild.add_argument("--keep-old", action="store_true", help="keep maintaining the replaced generation")
    rebuild.add_argument("--json", action="store_true", help="print JSON")
    rebuild.set_defaults(func=cmd_projections_rebuild)
    status = projections.add_parser("status", help="generations and the projector's lag")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_projections_status)
