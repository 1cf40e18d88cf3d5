"""One order's causation tree: every command, the job that carried it, every event, linked by cause.

Every message carries ``causation_id``: the id of the message that caused it. An event's
cause is the command its handler ran (or, choreographed, nothing but the command); a
command's cause is the command whose handler sent it (orchestrated) or the event a service
reacted to (choreographed). A job's own id can be a cause too (a dead letter's notice).
Messages with no cause hang under the customer's request (``PlaceOrder``).

Sources, all read-only: the order's hash (status, version), the event stream (the order's
entries, found from the time it was placed), the job hashes of its commands (from the order's
job index, ``chumon:order-jobs:<id>``, written in the same script as the jobs; an order placed
before the index existed is found by SCAN; finished jobs stay ``result_ttl`` seconds, 500 by
default, so an old order's commands may be gone while its events stay), and the read model's
summary (how far behind it is for this order).
"""

from __future__ import annotations

import datetime as dt
from contextlib import suppress
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from redis import Redis

from orders.errors import CorruptOrder
from orders.events import OrderPlaced, from_fields
from orders.keys import OrderKeys
from orders.model import Order
from orders.readmodel import ReadModel
from workers.codec import readable, texts
from workers.jobview import JobInfo, load_job

COMPENSATIONS = frozenset(
    {
        "ReleaseInventory",
        "RefundPayment",
        "CancelShipment",
        "InventoryReleased",
        "PaymentRefunded",
        "ShipmentCancelled",
    }
)
EARLIER = 600.0
"""How long before the order's placing its events are looked for (clocks of writers may differ)."""


class JobRun(BaseModel):
    """The job that carried a command: how its attempts went."""

    job_id: str
    queue: str
    job_type: str | None
    status: str
    attempt: int
    max_attempts: int | None
    retries: int = Field(description="failed attempts before the last one")
    failures: list[str] = Field(default_factory=list, description="each failed attempt, in words")
    next_run_at: str | None = None
    dead_lettered_at: str | None = None
    dead_letter_reason: str | None = None

    @classmethod
    def of(cls, job: JobInfo) -> JobRun:
        starts = [str(f.get("started_at") or "") for f in job.failures[1:]] + [job.started_at or ""]
        starts = starts[: len(job.failures)]
        failures = [
            f"attempt {f.get('attempt', '?')}: {f.get('exc_type', 'error')}: {f.get('message', '')}".strip()
            + _waited(str(f.get("ended_at") or ""), start)
            for f, start in zip(job.failures, starts, strict=True)
        ]
        return cls(
            job_id=job.id,
            queue=job.queue,
            job_type=job.job_type,
            status=job.status,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            retries=len(job.failures) - (1 if job.dead_lettered_at and job.failures else 0),
            failures=failures,
            next_run_at=job.next_run_at,
            dead_lettered_at=job.dead_lettered_at,
            dead_letter_reason=job.dead_letter_reason,
        )


class Node(BaseModel):
    kind: str = Field(description="request, command or event")
    id: str
    type: str
    at: float
    seq: int | None = Field(default=None, description="an event's position in the order's history")
    causation_id: str | None = None
    cause_missing: bool = Field(default=False, description="its cause is no longer kept (an expired job)")
    compensation: bool = False
    detail: str = ""
    job: JobRun | None = None
    children: list[Node] = Field(default_factory=list)

    def walk(self) -> list[Node]:
        return [self, *(n for child in self.children for n in child.walk())]


class Trace(BaseModel):
    order_id: str
    status: str
    reason: str | None
    attention: str | None
    version: int = Field(description="events the order has (write side)")
    read_model_version: int | None = Field(description="events the read model has applied (None: none yet)")
    events: int
    commands: int
    root: Node

    @property
    def read_model_lag(self) -> int:
        return self.version - (self.read_model_version or 0)


def build(redis: Redis, keys: OrderKeys, order_id: str, command_names: dict[str, str]) -> Trace | None:
    """The order's trace, or None if there is no such order. ``command_names``: job type -> the
    command it carries (the job adapters know which; this module does not import them)."""
    doc, version = redis.hmget(keys.order(order_id), ["doc", "version"])
    if doc is None:
        return None
    try:
        order, count = Order.model_validate_json(doc), int(version or 0)
    except (ValidationError, ValueError) as exc:
        raise CorruptOrder(order_id, str(exc).replace("\n", "; ")) from None
    events = order_events(redis, keys, order_id, order.placed_at, count)
    commands = [command_node(job, command_names) for job in order_jobs(redis, keys, order_id)]
    summary = ReadModel(redis, keys).get(order_id)
    root = Node(kind="request", id="", type="PlaceOrder", at=order.placed_at, detail="the customer's request")
    link(root, [*events, *commands])
    return Trace(
        order_id=order_id,
        status=order.status.value,
        reason=order.reason,
        attention=order.attention,
        version=count,
        read_model_version=summary.version if summary else None,
        events=len(events),
        commands=len(commands),
        root=root,
    )


def order_events(redis: Redis, keys: OrderKeys, order_id: str, placed_at: float, expected: int) -> list[Node]:
    """The order's events from the stream, read from shortly before it was placed."""
    found: list[Node] = []
    start = f"{max(0, int((placed_at - EARLIER) * 1000))}-0"
    while len(found) < expected:
        batch: Any = redis.xrange(keys.events, min=start, max="+", count=1000)
        for _entry_id, raw in batch:
            fields = {readable(k) or "": readable(v) or "" for k, v in raw.items()}
            if fields.get("order_id") == order_id:
                found.append(event_node(fields))
        if len(batch) < 1000:
            break
        start = "(" + (readable(batch[-1][0]) or "")
    return found


def event_node(fields: dict[str, str]) -> Node:
    try:
        event = from_fields(fields)
    except Exception as exc:  # a type this version cannot read: still shown, with its envelope
        return Node(
            kind="event", id=fields.get("id", "?"), type=fields.get("type", "?"), at=_float(fields.get("at")),
            seq=int(_float(fields.get("seq"))), causation_id=fields.get("causation_id") or None,
            detail=f"cannot be read here: {type(exc).__name__}",
        )  # fmt: skip
    data = event.model_dump(
        exclude={"id", "version", "order_id", "correlation_id", "causation_id", "at", "sequence"}
    )
    return Node(
        kind="event",
        id=event.id,
        type=event.type_name(),
        at=event.at,
        seq=event.sequence,
        causation_id=event.causation_id,
        compensation=event.type_name() in COMPENSATIONS,
        detail="" if isinstance(event, OrderPlaced) else _detail(data),  # the order: chumon order show
    )


def order_jobs(redis: Redis, keys: OrderKeys, order_id: str) -> list[JobInfo]:
    """The jobs that carried the order's commands: those in its job index (written with the
    jobs, orders/lua/includes/order_index.lua), else, for an order placed before there was an
    index, those found by scanning."""
    indexed = (
        redis.smembers(keys.order_jobs(order_id)) if redis.type(keys.order_jobs(order_id)) == b"set" else None
    )
    if not indexed:
        return scanned_jobs(redis, keys, order_id)
    jobs = (load_job(redis, keys.runtime, i) for i in sorted(texts(indexed)))
    return [job for job in jobs if job is not None and names(job.payload or {}, order_id)]


def scanned_jobs(redis: Redis, keys: OrderKeys, order_id: str) -> list[JobInfo]:
    """The jobs whose payload names the order, found by SCAN. The description (a bounded call
    string) picks the candidates; each is loaded and its payload checked (the description may
    be cut short)."""
    prefix = keys.runtime.job("")
    ids = []
    for chunk in _chunks(redis.scan_iter(match=keys.runtime.job("*"), count=1000), 500):
        with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hget(key, "description")
            descriptions = pipe.execute(raise_on_error=False)
        for key, description in zip(texts(chunk), descriptions, strict=True):
            if isinstance(description, bytes) and may_name(readable(description) or "", order_id):
                ids.append(key.removeprefix(prefix))
    jobs = (load_job(redis, keys.runtime, i) for i in ids)
    return [job for job in jobs if job is not None and names(job.payload or {}, order_id)]


def may_name(description: str, order_id: str) -> bool:
    """Whether a job's description names the order, or may, where it was cut short."""
    marker = '"order_id":"'
    at = description.find(marker)
    if at < 0:
        return description.endswith("...)")  # cut before the field (a dead-letter notice)
    shown = description[at + len(marker) :]
    if shown.startswith(order_id + '"'):
        return True
    return description.endswith("...)") and order_id.startswith(shown.removesuffix("...)"))


def names(payload: dict[str, Any], order_id: str) -> bool:
    inner = payload.get("payload")
    return payload.get("order_id") == order_id or (
        isinstance(inner, dict) and inner.get("order_id") == order_id
    )


def command_node(job: JobInfo, command_names: dict[str, str]) -> Node:
    payload = job.payload or {}
    if "order_id" not in payload and isinstance(payload.get("payload"), dict):  # a dead-letter notice
        return Node(
            kind="command",
            id=job.id,
            type="DeadLetterNotice",
            at=_float(job.created_at and epoch(job.created_at)),
            causation_id=str(payload.get("job_id") or "") or None,
            detail=f"tells the saga that job {payload.get('job_id')} died: {payload.get('reason', '')}"[:200],
            job=JobRun.of(job),
        )
    name = command_names.get(job.job_type or "", job.job_type or "?")
    data = {
        k: v
        for k, v in payload.items()
        if k not in {"id", "version", "order_id", "correlation_id", "causation_id", "at"}
    }
    return Node(
        kind="command",
        id=str(payload.get("id") or job.id),
        type=name,
        at=_float(payload.get("at")),
        causation_id=payload.get("causation_id") or None,
        compensation=name in COMPENSATIONS,
        detail=_detail(data),
        job=JobRun.of(job),
    )


def link(root: Node, nodes: list[Node]) -> None:
    """Hang each message under its cause (a message id, or the id of the job that carried one)."""
    by_id: dict[str, Node] = {}
    for node in nodes:
        by_id.setdefault(node.id, node)
        if node.job is not None:
            by_id.setdefault(node.job.job_id, node)
    for node in nodes:
        parent = by_id.get(node.causation_id or "") if node.causation_id else root
        if parent is None or parent is node:
            parent, node.cause_missing = root, True
        parent.children.append(node)
    for node in [root, *nodes]:
        node.children.sort(key=lambda n: (n.at, n.kind != "event", n.seq or 0))  # the record first


def _detail(data: dict[str, Any]) -> str:
    shown = {k: v for k, v in data.items() if v not in (None, "", [], {}, False)}
    return ", ".join(f"{k}={v}" for k, v in shown.items())[:200]


def _waited(ended: str, next_start: str) -> str:
    """The back-off between a failed attempt and the next one, in words ("" if unknown)."""
    ended_at, started_at = epoch(ended) if ended else 0.0, epoch(next_start) if next_start else 0.0
    if not ended_at or started_at < ended_at:
        return ""
    return f" (next attempt {started_at - ended_at:.1f} s later)"


def epoch(iso: str) -> float:
    """A job hash's ISO date as Unix time (0.0 if it cannot be read)."""
    with suppress(ValueError):
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(tzinfo=dt.UTC).timestamp()
    return 0.0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _chunks(items: Any, size: int) -> Any:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
