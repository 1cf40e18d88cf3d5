"""Delivery guarantees: the same charging job, with crashes injected, three ways.

Each job charges one order at the payment gateway (orders/payments.py, ``SimulatedGateway``,
the one the order flow uses). A worker takes jobs from a Redis list; with probability
``--crash-rate`` it dies at a random point: before the charge, or after it and before it
acknowledged the job. Then:

- **at most once**: the job is acknowledged before the work (RPOP: gone from Redis once
  taken). A crash before the charge loses it; nothing is ever charged twice.
- **at least once, without keys**: the job is taken into a processing list (LMOVE) and
  acknowledged after the work (LREM); a crashed worker's jobs are put back (as chumon's
  recovery does for a dead worker's runs, workers/recovery.py). Nothing is lost, but a crash
  after the charge charges again: the gateway sees a new request each time.
- **at least once, with effect keys**: the same, but the charge carries an idempotency key
  made from the job (``charge:<order>``, as orders/handlers.py passes it): the gateway
  answers a repeat with the first charge. Nothing lost, nothing doubled.

Lost and doubled charges are counted from the gateway's records after the run.
"""

from __future__ import annotations

import argparse
import random
import uuid

from pydantic import BaseModel
from redis import Redis

from orders.config import SimulationConfig
from orders.keys import OrderKeys
from orders.payments import SimulatedGateway

HELP = "at most once vs at least once, with and without idempotency keys, under injected crashes"
MODES = ("at-most-once", "at-least-once", "effect-keys")


class ModeResult(BaseModel):
    mode: str
    jobs: int
    crashes: int
    redelivered: int
    charges: int = 0
    lost: int = 0
    doubled: int = 0
    extra_charges: int = 0


class Result(BaseModel):
    jobs: int
    crash_rate: float
    seed: int
    modes: list[ModeResult]


class Crash(Exception):
    """The worker process died here (nothing after this point runs)."""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=200, help="jobs, one order each (default 200)")
    parser.add_argument("--crash-rate", type=float, default=0.2, help="chance a run dies (default 0.2)")
    parser.add_argument("--seed", type=int, default=14, help="of the crash injection (default 14)")


def run(redis: Redis, prefix: str, args: argparse.Namespace) -> Result:
    rate = min(max(args.crash_rate, 0.0), 0.9)
    modes = [run_mode(redis, f"{prefix}{mode}", mode, args.jobs, rate, args.seed) for mode in MODES]
    return Result(jobs=args.jobs, crash_rate=rate, seed=args.seed, modes=modes)


def run_mode(redis: Redis, prefix: str, mode: str, jobs: int, rate: float, seed: int) -> ModeResult:
    queue, processing = prefix + ":queue", prefix + ":processing"
    gateway = SimulatedGateway(redis, OrderKeys(prefix), SimulationConfig(payment_fault_rate=0.0))
    redis.lpush(queue, *[f"order-{i}" for i in range(jobs)])
    rng = random.Random(seed)
    result = ModeResult(mode=mode, jobs=jobs, crashes=0, redelivered=0)
    while True:
        raw = redis.rpop(queue) if mode == "at-most-once" else redis.lmove(queue, processing, "RIGHT", "LEFT")
        if raw is None:
            break
        order = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            work(gateway, mode, order, rng, rate)
            if mode != "at-most-once":
                redis.lrem(processing, 1, order)  # the acknowledgement, after the work
        except Crash:
            result.crashes += 1
            while redis.lmove(processing, queue, "LEFT", "RIGHT") is not None:  # a new worker recovers
                result.redelivered += 1
    count(gateway, jobs, result)
    return result


def work(gateway: SimulatedGateway, mode: str, order: str, rng: random.Random, rate: float) -> None:
    roll = rng.random()
    if roll < rate / 2:
        raise Crash  # before the charge
    key = f"charge:{order}" if mode == "effect-keys" else f"request:{uuid.uuid4().hex}"
    gateway.charge(idempotency_key=key, order_id=order, token="tok_ok", amount=1000, currency="EUR")
    if roll < rate:
        raise Crash  # after the charge, before the acknowledgement


def count(gateway: SimulatedGateway, jobs: int, result: ModeResult) -> None:
    per_order: dict[str, int] = {}
    for charge in gateway.charges():
        per_order[charge.order_id] = per_order.get(charge.order_id, 0) + 1
    result.charges = sum(per_order.values())
    result.lost = jobs - len(per_order)
    result.doubled = sum(1 for n in per_order.values() if n > 1)
    result.extra_charges = sum(n - 1 for n in per_order.values() if n > 1)


def render(r: Result) -> str:
    lines = [
        f"{r.jobs} charging jobs per mode; a run dies with probability {r.crash_rate:g} "
        f"(half before the charge, half after it and before the acknowledgement); seed {r.seed}",
        "",
        f"{'mode':<16}{'crashes':>9}{'redelivered':>13}{'charges':>9}{'lost':>7}{'doubled':>9}",
    ]
    for m in r.modes:
        lines.append(f"{m.mode:<16}{m.crashes:>9}{m.redelivered:>13}{m.charges:>9}{m.lost:>7}{m.doubled:>9}")
    lines += [
        "",
        "lost: orders never charged; doubled: orders charged more than once (counted at the gateway).",
        "chumon runs at least once with effect keys: the worker acknowledges after the work and",
        "every effect carries a key (workers/effects.py, orders/handlers.py).",
    ]
    return "\n".join(lines)
