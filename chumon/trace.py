"""``chumon trace ORDER_ID``: an order's causation tree; ``chumon tail``: events and jobs, live.

The tree is built by orders/trace.py from the order's events and the jobs that carried its
commands; here it is drawn. ``tail`` follows the event stream (XREAD from now on) and polls
the queues' registries for jobs that changed state, across all orders, one line each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, get_args

from redis import Redis

from chumon.bootstrap import order_shards
from chumon.settings import Settings
from orders import commands as c
from orders.errors import CorruptOrder
from orders.keys import OrderKeys
from orders.trace import Node, Trace, build, epoch
from workers.cli import CliContext, Exit, NotFound, emit, seconds
from workers.codec import BadJob, decode_data, readable, texts
from workers.keys import dead_letter_queue
from workers.queueindex import QueueIndex


def command_names() -> dict[str, str]:
    """Job type name -> the command it carries, from the job adapters' routes."""
    from jobs.orders import ROUTES

    known = set(get_args(c.Command))
    return {job_type.name: kind.__name__ for kind, job_type in ROUTES.items() if kind in known}


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S.%f")[:-3] if ts else "--:--:--.---"


def job_text(node: Node) -> str:
    job = node.job
    if job is None:
        return ""
    attempts = f"attempt {job.attempt}" + (f"/{job.max_attempts}" if job.max_attempts else "")
    text = f"  [job {job.job_id} on {job.queue}: {job.status}, {attempts}"
    if job.retries:
        text += f", {job.retries} retr{'y' if job.retries == 1 else 'ies'}"
    if job.next_run_at and job.status == "scheduled":
        text += f", next try {job.next_run_at}"
    if job.dead_lettered_at:
        text += f", DEAD-LETTERED {job.dead_lettered_at}"
    return text + "]"


def node_line(node: Node) -> str:
    if node.kind == "request":
        return f"{_when(node.at)}  {node.type}  ({node.detail})"
    mark = "event  " if node.kind == "event" else "command"
    seq = f"#{node.seq} " if node.seq is not None else ""
    undo = "  (compensation)" if node.compensation else ""
    missing = f"  (cause {node.causation_id} no longer kept)" if node.cause_missing else ""
    detail = f"  {node.detail}" if node.detail else ""
    return f"{_when(node.at)}  {mark} {seq}{node.type}{undo}{job_text(node)}{detail}{missing}"


def tree_lines(node: Node, prefix: str = "", last: bool = True, top: bool = True) -> Iterator[str]:
    branch = "" if top else ("└─ " if last else "├─ ")
    yield prefix + branch + node_line(node)
    inner = prefix + ("" if top else ("   " if last else "│  "))
    notes = [f"! {failure}" for failure in node.job.failures] if node.job else []
    if node.job and node.job.dead_letter_reason:
        notes.append(f"! dead letter: {node.job.dead_letter_reason}")
    for note in notes:
        yield (inner + ("│     " if node.children else "      ") + note)[:240]
    for i, child in enumerate(node.children):
        yield from tree_lines(child, inner, i == len(node.children) - 1, top=False)


def render(trace: Trace) -> str:
    head = f"order {trace.order_id}  {trace.status}" + (f"  ({trace.reason})" if trace.reason else "")
    lines = [head]
    if trace.attention:
        lines.append(f"  NEEDS ATTENTION: {trace.attention}")
    rm = trace.read_model_version
    lag = "up to date" if trace.read_model_lag == 0 else f"{trace.read_model_lag} event(s) behind"
    lines.append(
        f"  {trace.events} events, {trace.commands} commands (jobs Redis still keeps); "
        f"read model at version {rm if rm is not None else '-'} of {trace.version}: {lag}"
    )
    lines.append("")
    lines += list(tree_lines(trace.root))
    lines.append("")
    outcome = {
        "CONFIRMED": "confirmed",
        "CANCELLED": f"cancelled: {trace.reason}",
        "PENDING": "still running",
    }
    lines.append(f"outcome: {outcome.get(trace.status, trace.status)}")
    return "\n".join(lines)


def cmd_trace(args: argparse.Namespace, ctx: CliContext) -> int:
    keys = order_shards(ctx.redis(), _settings(ctx)).of(args.order_id)  # on Redis Cluster, its shard's
    try:
        trace = build(ctx.redis(), keys, args.order_id, command_names())
    except CorruptOrder as exc:
        print(f"chumon: {exc}", file=sys.stderr)
        return Exit.NOT_FOUND
    if trace is None:
        raise NotFound(f"no order {args.order_id!r}")
    emit(trace, args.json, render, ctx.mask)
    return 0


# -- tail ----------------------------------------------------------------------------------------------
def follow_events(
    redis: Redis, keys: OrderKeys, start: str, block_ms: int
) -> tuple[str, list[dict[str, Any]]]:
    """Events appended after ``start`` (a stream id), waiting up to ``block_ms`` for one."""
    reply: Any = redis.xread({keys.events: start}, count=500, block=block_ms)
    lines = []
    for _stream, entries in reply or []:
        for entry_id, raw in entries:
            start = readable(entry_id) or start
            fields = {readable(k) or "": readable(v) or "" for k, v in raw.items()}
            lines.append({
                "kind": "event", "stream_id": start, "type": fields.get("type"), "seq": fields.get("seq"),
                "order_id": fields.get("order_id"), "id": fields.get("id"),
                "causation_id": fields.get("causation_id") or None, "at": float(fields.get("at") or 0),
            })  # fmt: skip
    return start, lines


class JobWatch:
    """Jobs whose state changed since the last look: queued, running, scheduled, finished, dead."""

    def __init__(self, redis: Redis, keys: OrderKeys) -> None:
        self.redis, self.keys, self.seen = redis, keys.runtime, dict[str, tuple[str, str]]()
        self.since = time.time()

    def ids(self) -> set[str]:
        rt = self.keys
        found: set[str] = set()
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in QueueIndex(self.redis, rt).names():
                pipe.lrange(rt.queue(queue), 0, 200)
                pipe.zrange(rt.wip(queue), 0, 200)
                pipe.zrange(rt.scheduled(queue), 0, 200)
                pipe.zrangebyscore(rt.finished(queue), self.since - 5, "+inf")
                pipe.lrange(rt.queue(dead_letter_queue(queue)), 0, 200)
            for reply in pipe.execute(raise_on_error=False):
                if isinstance(reply, list):
                    found.update(texts(reply))
        return found

    def changes(self) -> list[dict[str, Any]]:
        ids = sorted(self.ids())
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), FIELDS)
            replies = pipe.execute(raise_on_error=False)
        out = []
        for job_id, reply in zip(ids, replies, strict=True):
            if not isinstance(reply, list) or reply[0] is None:
                continue
            status, attempt, job_type, queue, description, *dates = (readable(v) or "" for v in reply[:-1])
            if self.seen.get(job_id) == (status, attempt):
                continue
            self.seen[job_id] = (status, attempt)
            out.append({
                "kind": "job", "job_id": job_id, "job_type": job_type, "queue": queue, "status": status,
                "attempt": int(attempt) if attempt.isdigit() else 0,
                "order_id": _order_of(description) or _order_in(reply[-1]),
                "at": _changed_at(status, *dates) or time.time(),
            })  # fmt: skip
        return out


FIELDS = [
    "status",
    "attempt",
    "job_type",
    "origin",
    "description",
    "enqueued_at",
    "started_at",
    "ended_at",
    "data",
]


def _changed_at(status: str, enqueued_at: str, started_at: str, ended_at: str) -> float:
    """When the job reached ``status``, from its own dates (0.0 when it has none)."""
    stamp = {"queued": enqueued_at, "started": started_at}.get(status, ended_at or enqueued_at)
    return epoch(stamp) if stamp else 0.0


def _order_in(data: Any) -> str | None:
    """The order a job's payload names, when its description was cut before it."""
    try:
        _type, payload = decode_data(data)
    except BadJob:
        return None
    inner = payload.get("payload")
    found = payload.get("order_id") or (inner.get("order_id") if isinstance(inner, dict) else None)
    return found if isinstance(found, str) else None


def _order_of(description: str) -> str | None:
    marker = '"order_id":"'
    start = description.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = description.find('"', start)
    return description[start:end] if end > start else None


def tail_line(item: dict[str, Any]) -> str:
    order = item.get("order_id") or "-"
    if item["kind"] == "event":
        cause = f"  caused by {item['causation_id']}" if item.get("causation_id") else ""
        return f"{_when(item['at'])}  {order}  event   #{item['seq']} {item['type']}  id {item['id']}{cause}"
    return (
        f"{_when(item['at'])}  {order}  job     {item['job_type']} {item['job_id']} on {item['queue']}: "
        f"{item['status']} (attempt {item['attempt']})"
    )


def tail(
    redis: Redis,
    keys: OrderKeys | Sequence[OrderKeys],
    out: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    *,
    poll: float = 0.5,
    from_start: bool = False,
) -> None:
    """Follow the event log and the jobs; on Redis Cluster ``keys`` is every shard's, each shard's
    log and jobs read in turn (each read waiting its share of ``poll``)."""
    shards = [keys] if isinstance(keys, OrderKeys) else list(keys)
    starts = []
    for shard in shards:
        start = "0-0"
        if not from_start:  # "$" only means "from now" for the first read; pin it to an id
            last = redis.xrevrange(shard.events, count=1)
            start = readable(last[0][0]) or "0-0" if last else "0-0"
        starts.append(start)
    watches = [JobWatch(redis, shard) for shard in shards]
    block_ms = max(1, int(poll * 1000 / len(shards)))
    while not stop.is_set():
        items: list[dict[str, Any]] = []
        for n, shard in enumerate(shards):
            starts[n], events = follow_events(redis, shard, starts[n], block_ms)
            items += [*events, *watches[n].changes()]
        for item in sorted(items, key=lambda i: i["at"]):
            out(item)


def cmd_tail(args: argparse.Namespace, ctx: CliContext) -> int:
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def out(item: dict[str, Any]) -> None:
        print(ctx.mask(json.dumps(item) if args.json else tail_line(item)), flush=True)

    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    shards = order_shards(ctx.redis(), _settings(ctx)).all()  # on Redis Cluster, every shard
    tail(ctx.redis(), shards, out, stop, from_start=args.from_start)
    return 0


cmd_trace.on_cluster = True  # type: ignore[attr-defined]
cmd_tail.on_cluster = True  # type: ignore[attr-defined]


def _settings(ctx: CliContext) -> Settings:
    assert isinstance(ctx.settings, Settings)
    return ctx.settings


def register(sub: Any) -> None:
    trace = sub.add_parser("trace", help="an order's causation tree: commands, their jobs, events, outcome")
    trace.add_argument("order_id", help="the order's id (order place printed it)")
    trace.add_argument("--json", action="store_true", help="print JSON")
    trace.set_defaults(func=cmd_trace)
    tail_ = sub.add_parser("tail", help="follow events and jobs of every order, live (Ctrl-C stops)")
    tail_.add_argument("--json", action="store_true", help="one JSON object per line")
    tail_.add_argument("--from-start", action="store_true", help="the event log from its start first")
    tail_.add_argument("--duration", type=seconds, help="stop after this many seconds (at most a day)")
    tail_.set_defaults(func=cmd_tail)
