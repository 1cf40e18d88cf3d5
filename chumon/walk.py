"""``make demo DEMO_ARGS=--walk``: one order, step by step, in both saga styles side by side.

The same order is placed once per style, in-process: a worker thread serves every queue,
the event consumers run (the projector; choreographed, the services' reactors), an SMTP sink
takes the email. Each order's causation tree (orders/trace.py, as ``chumon trace`` prints
it) is then told in the order things happened, each message with what caused it: in the
orchestrated style the saga sends every command on the answer to the previous one; in the
choreographed style each service reacts to the previous service's event. The times are the
run's own.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from typing import Any

from redis import Redis

import jobs
import jobs.orders
from chumon.bootstrap import build_services
from chumon.settings import Settings
from chumon.smtpsink import SmtpSink
from chumon.trace import command_names
from orders.config import SmtpConfig
from orders.eventsproc import EventProcessors
from orders.keys import OrderKeys
from orders.trace import Node, Trace, build
from producer import Producer
from workers.worker import Worker

STYLES = ("orchestrated", "choreographed")
WIDTH = 62


def run_style(redis: Redis, settings: Settings, style: str, sink_port: int) -> Trace:
    """Place one order in ``style`` and return its trace once it has settled."""
    settings = settings.model_copy(
        update={
            "saga": settings.saga.model_copy(update={"style": style}),
            "smtp": SmtpConfig(port=sink_port, timeout=5),
        }
    )
    keys = OrderKeys(settings.key_prefix)
    services = build_services(redis, settings)
    services.inventory.set_stock("WALK-TEA", 1_000, 650)
    jobs.orders.configure(services)
    processors = EventProcessors(
        redis, keys, services.orders, choreographed=style == "choreographed",
        step_timeout=settings.saga.step_timeout, claim_after=settings.events.claim_after,
        max_deliveries=settings.events.max_deliveries, watchdog_interval=settings.saga.watchdog_interval,
    )  # fmt: skip
    worker = Worker(redis, jobs.registry, settings, concurrency=4, name=f"walk-{style}")
    thread = threading.Thread(target=worker.run, name=f"walk-{style}", daemon=True)
    with ExitStack() as stack:
        processors.start()
        stack.callback(processors.stop)
        thread.start()
        stack.callback(thread.join, 15)
        stack.callback(worker.stop)
        stack.callback(jobs.orders.configure, None)
        producer = Producer(redis, settings, jobs.registry, services.orders)
        order_id = producer.place_order(
            customer_name="Ada Lovelace", customer_email="ada@example.com", items=[("WALK-TEA", 2)],
            ship_to="12 Analytical Lane, London", payment_token="tok_transient_1",
        ).order_id  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            trace = build(redis, keys, order_id, command_names())
            if trace and trace.status != "PENDING" and _emailed(trace) and trace.read_model_lag == 0:
                return trace
            time.sleep(0.1)
    raise TimeoutError(f"the {style} order {order_id} did not settle within 60 s")


def _emailed(trace: Trace) -> bool:
    return any(node.type == "EmailSent" for node in trace.root.walk())


def steps(trace: Trace) -> list[str]:
    """The trace as sentences, in the order things happened, each saying what caused it."""
    parents = {id(child): node for node in trace.root.walk() for child in node.children}
    start = trace.root.at
    lines = []
    nodes = sorted(trace.root.walk()[1:], key=lambda n: (n.at, n.kind != "event", n.seq or 0))
    for i, node in enumerate(nodes, start=1):
        parent = parents.get(id(node))
        lines.append(f"{i:>2}. +{max(0.0, node.at - start) * 1000:5.0f} ms  {sentence(node, parent)}")
    return lines


def sentence(node: Node, parent: Node | None) -> str:
    if node.kind == "event":
        what = f"event {node.type}"
        if parent is None or parent.kind == "request":
            return f"{what}: recorded when the order was placed"
        if parent.kind == "command":
            return f"{what}: recorded by the {parent.type} handler"
        return f"{what}: the orders service reacted to {parent.type}"
    job = node.job
    carried = ""
    if job is not None:
        failed = f", after {job.retries} failed" if job.retries else ""
        carried = f" [{job.queue}, attempt {job.attempt}{failed}]"
    what = f"command {node.type}{carried}"
    if parent is None or parent.kind == "request":
        return f"{what}: sent with the order, by the saga"
    if parent.kind == "command":
        return f"{what}: the saga sent it on {parent.type}'s answer"
    return f"{what}: {job.queue if job else 'a service'} reacted to {parent.type}"


def side_by_side(left: list[str], right: list[str]) -> list[str]:
    """Two columns, each sentence wrapped to WIDTH."""
    cols = [_wrap(left), _wrap(right)]
    height = max(len(c) for c in cols)
    cols = [c + [""] * (height - len(c)) for c in cols]
    return [f"{a:<{WIDTH}}  {b}".rstrip() for a, b in zip(*cols, strict=True)]


def _wrap(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        while len(line) > WIDTH:
            cut = line.rfind(" ", 0, WIDTH)
            cut = cut if cut > 10 else WIDTH
            out.append(line[:cut])
            line = "              " + line[cut:].lstrip()
        out.append(line)
    return out


def walk(settings: Settings, redis: Redis) -> dict[str, Any]:
    with SmtpSink(port=0, redis=redis, keys=OrderKeys(settings.key_prefix)) as sink:
        traces = {style: run_style(redis, settings, style, sink.port) for style in STYLES}
    return {
        style: {"order_id": t.order_id, "status": t.status, "steps": steps(t)} for style, t in traces.items()
    }


def render(data: dict[str, Any]) -> str:
    heads = [f"{style} (order {data[style]['order_id'][:12]}…)" for style in STYLES]
    lines = [
        "One order, placed once per saga style (a card that fails once, then pays), step by step:",
        "",
        f"{heads[0]:<{WIDTH}}  {heads[1]}",
        f"{'-' * WIDTH}  {'-' * WIDTH}",
        *side_by_side(data["orchestrated"]["steps"], data["choreographed"]["steps"]),
        "",
        "Orchestrated: the saga (orders/saga.py) sends each command on the answer to the last one.",
        "Choreographed: each service reacts to the event before it (orders/reactors.py).",
        "Same outcome: "
        + ", ".join(f"{s} {data[s]['status']}" for s in STYLES)
        + ". `chumon trace ID` shows either tree.",
    ]
    return "\n".join(lines)


def main(settings: Settings, redis: Redis, *, as_json: bool) -> int:
    data = walk(settings, redis)
    print(json.dumps(data, indent=2) if as_json else render(data))
    return 0 if all(data[s]["status"] == "CONFIRMED" for s in STYLES) else 1
