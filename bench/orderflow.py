"""The order flow end to end, with worker processes like the Procfile's.

One ``chumon worker`` process per service queue and the ``chumon events`` process (the
projector; in the choreographed style also the services' reactors), started from the
Procfile's own lines; an in-process SMTP sink on a free port (``CHUMON_SMTP__PORT``); stock
seeded with plenty of units; orders placed with ``producer.Producer`` built as tests/flow.py
builds it. Every order uses ``tok_ok`` and a plain address, so every order must end
CONFIRMED, with its stock committed and its confirmation email sent, and pass the checks of
orders/audit.py (bench/orderaudit.py: the same checks, in one pass).

Phases, with the same worker processes: a warm-up, a fixed offered load (default 30
orders/s for 20 s; latency from place_order to CONFIRMED), then a burst placed as fast as a
few threads can (sustained throughput in confirmations per second).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from redis import Redis

import jobs
from bench import ROOT
from bench.drain import RunFailed
from bench.eventlog import EventLog, percentile
from bench.orderaudit import audit_confirmed
from bench.plan import Plan
from bench.redisenv import RedisEnv
from chumon.bootstrap import build_services
from chumon.progress import Progress
from chumon.settings import Settings
from chumon.smtpsink import SmtpSink
from orders.config import SagaConfig, SmtpConfig
from orders.handlers import Services
from orders.inventory import Inventory
from orders.keys import OrderKeys
from orders.payments import SimulatedGateway
from orders.shipping import SimulatedCarrier
from producer import Producer
from workers.keys import Keys, dead_letter_queue

SMTP_KEEP_ALIVE = 30.0
"""CHUMON_SMTP__KEEP_ALIVE of the workers: each notifications thread keeps its SMTP connection
(a connection per email cost the worker and the sink as much as the message itself)."""
SERVICE_QUEUES = ("orders", "inventory", "payments", "shipping", "notifications")
CATALOGUE = {"TEA": 450, "MUG": 1299}
STOCK = 10**9
PLACING_THREADS = 4  # the bench's placing threads (Plan.placing_threads, orderprofile --threads)


ORDER_PROCESSES = (["chumon", "worker"], ["chumon", "consumers"])  # the Procfile's lines that move orders


def procfile_processes(procfile: Path | None = None) -> list[str]:
    """The Procfile's ``chumon worker`` and ``chumon consumers`` command lines, as written there.

    ``procfile``: another file of the same format (to compare process layouts; default the
    checkout's Procfile)."""
    return [command for _, command in procfile_lines(procfile)]


def procfile_lines(procfile: Path | None = None) -> list[tuple[str, str]]:
    """(name, command line) of the Procfile's order processes (see ``procfile_processes``)."""
    lines = []
    for line in (procfile or ROOT / "Procfile").read_text().splitlines():
        if line.strip().startswith("#") or ":" not in line:
            continue
        name, _, command = line.partition(":")
        if shlex.split(command.strip())[:2] in ORDER_PROCESSES:
            lines.append((name.strip(), command.strip()))
    commands = [command for _, command in lines]
    served = {q for command in commands for q in _queues_of(shlex.split(command))}
    if not set(SERVICE_QUEUES) <= served:
        raise RunFailed(f"the Procfile's workers serve {sorted(served)}, not every one of {SERVICE_QUEUES}")
    return lines


def shell(command: str) -> list[str]:
    """Run a Procfile line as honcho does, through the shell (which expands ``${PORT:-0}``)."""
    return ["/bin/sh", "-c", "exec " + command]


def _queues_of(argv: list[str]) -> list[str]:
    if "--queues" not in argv:
        return []
    rest = argv[argv.index("--queues") + 1 :]
    return rest[: next((i for i, arg in enumerate(rest) if arg.startswith("-")), len(rest))]


def order_request(i: int) -> dict[str, Any]:
    return {
        "customer_name": f"Customer {i}",
        "customer_email": f"c{i}@example.com",
        "items": [("TEA" if i % 2 else "MUG", 1 + i % 3)],
        "ship_to": f"{i} Benchmark Street",
        "payment_token": "tok_ok",
    }


@dataclass
class Flow:
    env: RedisEnv
    settings: Settings
    services: Services
    log: EventLog
    processes: list[tuple[str, subprocess.Popen[str]]] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)
    placers: list[Producer] = field(default_factory=list)
    """The placing threads' producers, each with a client of its own (``placing``)."""

    def producer(self, redis: Redis) -> Producer:
        services = self.services if redis is self.env.redis else build_services(redis, self.settings)
        return Producer(redis, self.settings, jobs.registry, services.orders)

    def placing(self, threads: int) -> list[Producer]:
        """``threads`` producers for a burst, built once per flow and kept for its later bursts.

        A producer takes about 130 ms of CPU to build (its services read and check every Lua
        script's keyspace): built inside a burst, as before, four of them cost the two cores
        half a second at its start, as much as 1,700 µs per order of a 300-order burst, which no
        long-lived producer pays per order."""
        while len(self.placers) < threads:
            self.placers.append(self.producer(Redis.from_url(self.env.url)))
        return self.placers[:threads]

    def close(self) -> None:
        for producer in self.placers:
            producer.redis.close()
        self.placers.clear()


@contextmanager
def running_flow(
    env: RedisEnv, saga_style: str, procfile: Path | None = None, *, flush: bool = True
) -> Iterator[Flow]:
    """Sink, stock, and the Procfile's processes, for the block's duration.

    ``flush=False`` keeps what Redis holds (the orders kept of the cost-growth pass): the flow's
    event log then starts at the stream's end."""
    if flush:
        env.flush()
    keys = OrderKeys()
    log = EventLog(env.redis, keys.events)
    if not flush:
        last: list[tuple[bytes, Any]] = env.redis.xrevrange(keys.events, count=1)  # type: ignore[assignment]
        log.last_id = last[0][0].decode() if last else "-"
    with ExitStack() as stack:
        sink = stack.enter_context(SmtpSink(port=0, redis=env.redis, keys=keys))
        settings = Settings(
            redis_url=env.url, smtp=SmtpConfig(port=sink.port), saga=SagaConfig(style=saga_style)
        )
        inventory = Inventory(env.redis, keys)
        for sku, price in CATALOGUE.items():
            inventory.set_stock(sku, STOCK, price)
        extra = {
            "CHUMON_SMTP__PORT": str(sink.port),
            "CHUMON_SAGA__STYLE": saga_style,
            "CHUMON_SMTP__KEEP_ALIVE": str(SMTP_KEEP_ALIVE),
        }
        processes = stack.enter_context(order_processes(env, extra, procfile))
        services = build_services(env.redis, settings)
        flow = Flow(env, settings, services, log, processes)
        stack.callback(flow.close)
        flow.placing(PLACING_THREADS)  # before any burst: their building is no order's cost
        yield flow


@contextmanager
def order_processes(
    env: RedisEnv, extra: dict[str, str], procfile: Path | None = None
) -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    """The Procfile's order processes, running: (its name in the Procfile, process) each."""
    lines = procfile_lines(procfile)
    commands = [command for _, command in lines]
    bin_dir = str(Path(sys.executable).parent)  # where the virtualenv's `chumon` entry point is
    extra = {**extra, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    with ExitStack() as stack:
        logs: list[IO[str]] = [stack.enter_context(tempfile.TemporaryFile(mode="w+")) for _ in commands]
        procs = [
            subprocess.Popen(
                shell(c), cwd=ROOT, env=env.child_env(**extra), stdout=log, stderr=log, text=True
            )
            for c, log in zip(commands, logs, strict=True)
        ]
        stack.callback(stop_processes, procs)
        _wait_registered(env.redis, commands, procs, logs)
        yield [(name, proc) for (name, _), proc in zip(lines, procs, strict=True)]


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM, then up to 15 s each to end, then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_registered(
    redis: Redis, commands: list[str], procs: list[subprocess.Popen[str]], logs: list[IO[str]]
) -> None:
    deadline = time.monotonic() + 60
    workers = sum(1 for command in commands if shlex.split(command)[1] == "worker")
    while int(redis.zcard(Keys().live_workers)) < workers:
        for command, proc, log in zip(commands, procs, logs, strict=True):
            if proc.poll() is not None:
                log.seek(0)
                raise RunFailed(f"{command!r} exited {proc.returncode}: {log.read()[-500:]}")
        if time.monotonic() > deadline:
            raise RunFailed("the order flow's workers did not register within 60 s")
        time.sleep(0.05)


# -- phases --------------------------------------------------------------------------------------
def place_paced(flow: Flow, rate: float, seconds: float, first: int, progress: Progress) -> list[str]:
    """Offered load: order i is placed at start + i / rate (from one thread)."""
    (producer,) = flow.placing(1)
    count = max(1, round(rate * seconds))
    start = time.monotonic()
    ids = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ids.append(producer.place_order(**order_request(first + i)).order_id)
        progress.update(i + 1, "placed")
    return ids


def place_burst(flow: Flow, count: int, threads: int, first: int) -> list[str]:
    """As fast as ``threads`` threads can, each with its own client and producer."""

    producers = flow.placing(threads)

    def place_share(k: int) -> list[str]:
        producer = producers[k]
        return [producer.place_order(**order_request(first + i)).order_id for i in range(k, count, threads)]

    with ThreadPoolExecutor(threads) as pool:
        return [order_id for share in pool.map(place_share, range(threads)) for order_id in share]


def settle(flow: Flow, ids: list[str], label: str, timeout: float) -> None:
    progress = Progress(len(ids), label)
    try:
        flow.log.wait_settled(ids, timeout, progress.update)
    finally:
        progress.close()
    flow.placed += ids


# -- a round ---------------------------------------------------------------------------------------
def run_orders(env: RedisEnv, plan: Plan, label: str, saga_style: str) -> dict[str, Any]:
    """One round of the order flow; RunFailed unless every order ends CONFIRMED and the audit passes."""
    with running_flow(env, saga_style) as flow:
        warm = place_burst(flow, plan.warmup_orders, 1, 0)
        settle(flow, warm, f"{label} warm-up", 60)
        offered = Progress(round(plan.offered_rate * plan.offered_seconds), f"{label} offered load")
        try:
            paced = place_paced(flow, plan.offered_rate, plan.offered_seconds, len(flow.placed), offered)
        finally:
            offered.close()
        settle(flow, paced, f"{label} offered load, settling", 120)
        started = time.time()
        burst = place_burst(flow, plan.burst_orders, plan.placing_threads, len(flow.placed))
        placing = time.time() - started
        settle(flow, burst, f"{label} burst", max(120.0, plan.burst_orders / 10))
        return _measure(flow, paced, burst, placing, plan, saga_style)


def _measure(
    flow: Flow, paced: list[str], burst: list[str], placing: float, plan: Plan, saga_style: str
) -> dict[str, Any]:
    log, redis = flow.log, flow.env.redis
    latencies = log.latencies_ms(paced)
    total = len(flow.placed)
    finished = sum(int(redis.zcard(Keys().finished(q))) for q in SERVICE_QUEUES)
    _check(flow)
    first_placed = min(log.placed_at[i] for i in burst)
    last_confirmed = max(log.confirmed_at[i] for i in burst)
    return {
        "orders": total,
        "saga_style": saga_style,
        "offered_rate": plan.offered_rate,
        "offered_orders": len(paced),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "latency_max_ms": latencies[-1],
        "burst_orders": len(burst),
        "burst_placing_rate": len(burst) / placing,
        "sustained_rate": log.steady_rate(burst),
        "burst_overall_rate": len(burst) / (last_confirmed - first_placed),
        "jobs_per_order": finished / total,
        "events_per_order": log.events / total,
    }


def _check(flow: Flow) -> None:
    """Every order CONFIRMED and accounted for by every party; no job failed or dead-lettered."""
    keys, redis = Keys(), flow.env.redis
    problems = []
    for queue in SERVICE_QUEUES:
        failed = int(redis.zcard(keys.failed(queue)))
        dead = int(redis.llen(keys.queue(dead_letter_queue(queue))))
        if failed or dead:
            problems.append(f"queue {queue}: {failed} failed, {dead} dead-lettered")
    gateway, carrier = flow.services.payments, flow.services.carrier
    assert isinstance(gateway, SimulatedGateway) and isinstance(carrier, SimulatedCarrier)
    problems += audit_confirmed(
        redis, OrderKeys(), gateway, carrier, flow.placed, units_ordered(len(flow.placed))
    )
    if problems:
        raise RunFailed("order flow: " + "; ".join(problems))


def units_ordered(orders: int) -> Counter[str]:
    """Units per SKU of orders 0..orders-1 (order_request is deterministic)."""
    units: Counter[str] = Counter()
    for i in range(orders):
        for sku, quantity in order_request(i)["items"]:
            units[sku] += quantity
    return units
