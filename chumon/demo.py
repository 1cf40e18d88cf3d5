"""``make demo``: the whole order flow, as an operator runs it.

Starts the Procfile with honcho (a worker per service, the scheduler, rq-dashboard, the SMTP
sink), seeds stock, places a mix of orders (ones that confirm, one out of stock, one
declined, one the carrier refuses, ones that hit transient payment, carrier and SMTP faults
and recover, a bounced email, a double submit), shows live progress, then prints where each
order ended and why, the retries it took, the dead-letter queues, the emails the sink
received, the invariants checked against every party's records, and the dashboard's URL.
Then it stops everything (``--keep`` keeps it running until Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

import jobs
from chumon.app import redis_client
from chumon.bootstrap import build_services
from chumon.devredis import free_port
from chumon.logs import mask, mask_url
from chumon.progress import Progress
from chumon.settings import Settings, load
from orders.audit import Audit, audit, sink_messages
from orders.keys import OrderKeys
from orders.money import format_amount, parse_amount
from orders.payments import SimulatedGateway
from orders.shipping import SimulatedCarrier
from orders.views import OrderDetails
from producer import Producer
from workers.cli import table
from workers.codec import decode_data, raw_bytes
from workers.deadletter import DeadLetters

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("orders", "inventory", "payments", "shipping", "notifications")
STOCK = {
    "TEA-SENCHA": (40, "6.50"),
    "MUG-STONE": (25, "14.00"),
    "POT-CAST-IRON": (3, "59.00"),
    "KETTLE": (8, "39.90"),
}
FAULTS = {"CHUMON_SIMULATION__PAYMENT_FAULT_RATE": "0.2", "CHUMON_SIMULATION__CARRIER_FAULT_RATE": "0.15"}


@dataclass
class Scenario:
    label: str
    items: list[tuple[str, int]]
    email: str = "ada@example.com"
    token: str = "tok_ok"
    ship_to: str = "12 Analytical Lane, London"
    key: str | None = None
    order_ids: list[str] = field(default_factory=list)


def scenarios(run: str) -> list[Scenario]:
    return [
        Scenario("confirms", [("TEA-SENCHA", 2), ("MUG-STONE", 1)]),
        Scenario("confirms", [("KETTLE", 1)], email="grace@example.com"),
        Scenario("confirms", [("MUG-STONE", 2)], email="alan@example.com"),
        Scenario("confirms", [("TEA-SENCHA", 5)], email="edsger@example.com"),
        Scenario("confirms", [("POT-CAST-IRON", 1)], email="barbara@example.com"),
        Scenario("out of stock", [("POT-CAST-IRON", 5)], email="donald@example.com"),
        Scenario("declined card", [("KETTLE", 1)], email="ken@example.com", token="tok_declined"),
        Scenario("carrier refuses", [("MUG-STONE", 1)], email="dennis@example.com", ship_to="7 Nowhere Road"),
        Scenario(
            "flaky card (2 faults)",
            [("TEA-SENCHA", 1)],
            email="margaret@example.com",
            token="tok_transient_2",
        ),
        Scenario("greylisted email", [("TEA-SENCHA", 1)], email="tempfail-radia@example.com"),
        Scenario("bounced email", [("KETTLE", 1)], email="bounce-john@example.com"),
        Scenario("double submit", [("MUG-STONE", 1)], email="frances@example.com", key=f"checkout-{run}"),
        Scenario("double submit", [("MUG-STONE", 1)], email="frances@example.com", key=f"checkout-{run}"),
    ]


def port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers will
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def start_procfile(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            str(ROOT / "Procfile"),
            "-d",
            str(ROOT),
            "--no-colour",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_procfile(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # honcho stops every process (the workers drain first)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def wait_ready(redis: Redis, proc: subprocess.Popen[bytes], smtp_port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the Procfile stopped early; see {log_path}:\n{log_path.read_text()[-2000:]}")
        workers = redis.scard("rq:workers")
        if workers >= len(SERVICES) and _listening(smtp_port):
            return
        time.sleep(0.2)
    raise SystemExit(f"the Procfile did not come up within 60 s; see {log_path}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def settled(order: OrderDetails | None) -> bool:
    if order is None:
        return False
    if order.attention:
        return True
    if order.status.value == "PENDING" or not order.emails:
        return False
    return order.status.value == "CANCELLED" or bool(order.saga.facts.get("inventory_committed"))


def watch(producer: Producer, ids: list[str], timeout: float) -> dict[str, OrderDetails]:
    progress = Progress(len(ids), "orders settled", stream=sys.stderr)
    deadline = time.monotonic() + timeout
    while True:
        orders = {i: o for i in ids if (o := producer.get_order(i)) is not None}
        done = sum(settled(o) for o in orders.values())
        states = Counter(o.status.value.lower() for o in orders.values())
        progress.update(done, ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        if done == len(ids) or time.monotonic() > deadline:
            progress.close()
            return orders
        time.sleep(0.25)


def retries_by_order(redis: Redis) -> dict[str, int]:
    """Attempts beyond the first, summed over each order's jobs."""
    retries: dict[str, int] = defaultdict(int)
    for key in redis.scan_iter("rq:job:*", count=500):
        data, attempt = redis.hmget(key, ["data", "attempt"])
        try:
            _, payload = decode_data(raw_bytes(data))
        except Exception:
            continue
        if payload.get("order_id") and attempt:
            retries[payload["order_id"]] += max(0, int(attempt) - 1)
    return retries


def report(
    scenarios_: list[Scenario], orders: dict[str, OrderDetails], retries: dict[str, int], redis: Redis,
    settings: Settings, checked: Audit, dashboard: str, elapsed: float,
) -> dict[str, Any]:  # fmt: skip
    rows = []
    for sc in scenarios_:
        for order_id in sc.order_ids:
            order = orders.get(order_id)
            if order is None:
                continue
            rows.append(
                {
                    "scenario": sc.label,
                    "order": order_id,
                    "status": order.status.value,
                    "why": order.reason or order.attention or "",
                    "retries": retries.get(order_id, 0),
                    "total": format_amount(order.total, order.currency),
                    "emails": sorted(order.emails),
                }
            )
    dead = DeadLetters(redis, settings)
    dead_letters = [
        {
            "queue": d.queue,
            "job": d.id,
            "type": d.job_type,
            "reason": d.dead_letter_reason,
            "error": d.last_error,
        }
        for d in dead.entries()
    ]
    messages = sink_messages(redis, OrderKeys(settings.key_prefix))
    return {
        "elapsed_s": round(elapsed, 1),
        "orders": rows,
        "dead_letters": dead_letters,
        "emails": {"received": len(messages), "unique_message_ids": len({m["message_id"] for m in messages})},
        "audit": checked.model_dump(),
        "dashboard": dashboard,
    }


def render(data: dict[str, Any]) -> str:
    out = [f"\nEvery order settled in {data['elapsed_s']} s. Where each one ended, and why:\n"]
    out.append(
        table(
            [
                (r["scenario"], r["order"][:12], r["status"], r["retries"], r["total"], r["why"][:70])
                for r in data["orders"]
            ],
            ["scenario", "order", "status", "retries", "total", "why"],
        )
    )
    out.append("\nDead-letter queues (chumon dlq list):")
    out += [
        f"  {d['queue']}.dlq  {d['type']}  {d['reason']}: {d['error'][:80]}" for d in data["dead_letters"]
    ] or ["  empty"]
    emails = data["emails"]
    out.append(
        f"\nThe SMTP sink received {emails['received']} emails "
        f"({emails['unique_message_ids']} distinct Message-IDs)."
    )
    checked = data["audit"]
    out.append(
        f"\nInvariants, counted from Redis, the gateway's and carrier's records and the SMTP sink: "
        f"{'all hold' if not checked['violations'] else 'VIOLATED'} "
        f"({checked['charges']} charges, {checked['refunds']} refunds, {checked['shipments']} shipments, "
        f"{checked['shipment_cancellations']} cancelled)."
    )
    out += [f"  ! {v}" for v in checked["violations"]]
    out += [f"  needs attention: {a}" for a in checked["needs_attention"]]
    out.append(f"\nrq-dashboard: {data['dashboard']}")
    return "\n".join(out)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="chumon's order flow, end to end")
    parser.add_argument("--keep", action="store_true", help="keep the processes running until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--walk", action="store_true", help="one order step by step, both saga styles side by side"
    )
    args = parser.parse_args(argv)
    if args.walk:  # in-process, no Procfile: chumon/walk.py
        from chumon import walk

        settings = load()
        return walk.main(settings, redis_client(settings.redis_url, settings.redis), as_json=args.json)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the Procfile on SIGTERM too, not just Ctrl-C

    smtp_port, dash_port, metrics_port = port_or_free(8025), port_or_free(9181), port_or_free(9300)
    env = dict(
        os.environ,
        **FAULTS,
        CHUMON_SMTP__PORT=str(smtp_port),
        CHUMON_DASHBOARD__PORT=str(dash_port),
        CHUMON_METRICS_PORT=str(metrics_port),
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    os.environ.update(CHUMON_SMTP__PORT=str(smtp_port))
    settings = load()
    redis = redis_client(settings.redis_url, settings.redis)
    log_path = Path(tempfile.mkdtemp(prefix="chumon-demo-")) / "procfile.log"
    dashboard = f"http://127.0.0.1:{dash_port}/   metrics: http://127.0.0.1:{metrics_port}/metrics"
    where = mask_url(settings.redis_url)
    print(f"Redis at {where}. Starting the Procfile (logs: {log_path})", file=sys.stderr)
    started = time.monotonic()
    proc = start_procfile(env, log_path)
    ok = False
    try:
        wait_ready(redis, proc, smtp_port, log_path)
        services = build_services(redis, settings)
        for sku, (units, price) in STOCK.items():
            services.inventory.set_stock(sku, units, parse_amount(price))
        producer = Producer(redis, settings, jobs.registry, services.orders)
        run = f"{time.time():.0f}"
        plan = scenarios(run)
        for sc in plan:
            placed = producer.place_order(
                customer_name=sc.email.split("@")[0].split("-")[-1].title(),
                customer_email=sc.email,
                items=sc.items,
                ship_to=sc.ship_to,
                payment_token=sc.token,
                idempotency_key=sc.key,
            )
            if placed.created:
                sc.order_ids.append(placed.order_id)
        ids = [i for sc in plan for i in sc.order_ids]
        print(
            f"Placed {len(ids)} orders ({len(plan)} requests; the double submit made one).", file=sys.stderr
        )
        orders = watch(producer, ids, timeout=90)
        assert isinstance(services.payments, SimulatedGateway) and isinstance(
            services.carrier, SimulatedCarrier
        )
        checked = audit(
            redis, OrderKeys(settings.key_prefix), services.orders.store, services.payments, services.carrier
        )
        data = report(
            plan,
            orders,
            retries_by_order(redis),
            redis,
            settings,
            checked,
            dashboard,
            time.monotonic() - started,
        )
        print(mask(json.dumps(data, indent=2) if args.json else render(data)))  # as the logs: no raw emails
        ok = checked.ok and all(settled(o) for o in orders.values()) and len(orders) == len(ids)
        if args.keep:
            print(f"\nStill running: {dashboard}   (Ctrl-C stops everything)", file=sys.stderr)
            while proc.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        code = stop_procfile(proc)
        print(f"Stopped the Procfile (honcho exit {code}).", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
