"""Chaos over the order flow: real processes, slow parties, late answers, SIGKILLs, and a
rolling deploy of a new event type; then everything is counted from the raw records.

``run_chaos(plan)`` places a mix of orders through worker processes and ``chumon events``:

- the parties are slow (``tok_slow`` charges and ``Slowboat`` shipments land after their step
  time-out; refunds, cancellations and releases answer late), fail at random, and some
  emails are greylisted;
- a killer SIGKILLs the worker that sends the emails and the one that runs the steps and
  compensations, at random moments, and starts a fresh one each time;
- mid-run, an "upgraded writer" records a ``GiftWrapped`` event (tests/apps/upgrade.py) on
  some orders: the running consumers cannot read it, park it and flag the order; then
  ``chumon events`` is replaced by an upgraded one, and ``chumon events dlq retry --all``
  (upgraded) hands the parked entries back.

At the end (``ChaosReport``): every order terminal with nothing left to undo, nothing
flagged, nothing parked; the audit of every charge, refund, reservation, shipment and email;
the read model equal to the write side; and every duplicate email matched to a kill inside
the crash window of docs/orders.md (from the moment the mail server has the message to the
commit of EmailSent), with the window's measured width.
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.audit import Audit, sink_messages
from orders.keys import OrderKeys
from producer import Producer
from tests.apps.upgrade import wrap_gift
from tests.flow import CATALOGUE, Flow, flow_settings, read_side_differences, with_style
from tests.support import ROOT, ChumonProcess, WorkerProcess, env_for, wait_until
from workers.deadletter import DeadLetters

STEP_QUEUES = ["orders", "inventory", "payments", "shipping"]
GROUPS = [
    "projector",
    *(f"reactor-{s}" for s in ("inventory", "payments", "shipping", "orders", "notifications")),
]
WINDOW_SLACK = 0.25
"""Seconds a kill may precede the sink's record of a message and still be in its window: the
window opens when the mailer has sent the message's last byte, the sink records it just after."""


@dataclass(frozen=True)
class ChaosPlan:
    orders: int = 30
    kills: int = 4
    kill_every: tuple[float, float] = (0.6, 1.6)
    gifts: int = 2
    voids: bool = True
    seed: int = 11
    place_every: float = 0.05


@dataclass
class ChaosReport:
    style: str
    orders: int
    by_status: dict[str, int]
    kills: list[tuple[float, str]]
    audit: Audit
    stuck: list[str]
    read_side: list[str]
    parked: dict[str, int]
    duplicates: dict[str, int]
    unexplained_duplicates: list[str]
    kills_in_window: int
    window_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    requeued: int = 0

    def summary(self) -> str:
        mail = sum(1 for _, role in self.kills if role == "mail")
        return (
            f"{self.style}: {self.orders} orders {self.by_status} in {self.seconds:.0f} s "
            f"(cancelled because: {self.reasons}); "
            f"{self.requeued} dead letters requeued as an operator would (attempts used up by kills); "
            f"{len(self.kills)} SIGKILLs ({mail} of the mail worker), "
            f"{self.kills_in_window} inside an email's crash window; duplicate emails {len(self.duplicates)} "
            f"(unexplained {len(self.unexplained_duplicates)}); window {self.window_ms}; "
            f"charges {self.audit.charges}, refunds {self.audit.refunds}, shipments {self.audit.shipments}, "
            f"cancelled shipments {self.audit.shipment_cancellations}, emails {self.audit.emails_received}"
        )


class ModuleProcess(ChumonProcess):
    """``python -m <module> <args>``: here, the upgraded chumon (tests/apps/upgrade.py)."""

    def __init__(self, redis_url: str, module: str, *args: str, **settings: Any) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed by wait())
        self._output = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env_for(redis_url, **settings),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def mix(rng: random.Random, n: int) -> list[dict[str, Any]]:
    orders = []
    for i in range(n):
        roll = rng.random()
        order: dict[str, Any] = {
            "customer_name": f"Customer {i}",
            "customer_email": f"c{i}@example.com",
            "items": [(rng.choice(["TEA", "MUG"]), rng.randint(1, 3))],
            "ship_to": f"{i} Chaos Street",
        }
        if roll < 0.18:
            order["payment_token"] = "tok_slow"  # lands after its step gave up
        elif roll < 0.32:
            order["ship_to"] = f"{i} Slowboat Quay"  # likewise, one step later
        elif roll < 0.40:
            order["items"] = [("POT", 1)]  # contended
        elif roll < 0.47:
            order["payment_token"] = "tok_declined"
        elif roll < 0.54:
            order["ship_to"] = f"{i} Nowhere Lane"
        elif roll < 0.61:
            order["payment_token"] = "tok_transient_2"
        elif roll < 0.68:
            order["customer_email"] = f"tempfail-{i}@example.com"
        orders.append(order)
    return orders


def environment(style: str, sink_port: int, voids: bool) -> dict[str, Any]:
    return {
        "smtp__port": sink_port,
        "saga__style": style,
        "saga__step_timeout": 1.5,
        "simulation__slow_for": 2.5,
        "simulation__response_latency__refund": 0.6,
        "simulation__response_latency__cancel": 0.6,
        "simulation__response_latency__release": 0.3,
        "simulation__payment_fault_rate": 0.05,
        "simulation__carrier_fault_rate": 0.05,
        "simulation__gateway_timeout": 0.2,
        "simulation__voids": str(voids).lower(),
        "events__claim_after": 1.0,
    }


class Workers:
    """The worker processes the killer picks from: 'steps' (steps and compensations) and 'mail'."""

    def __init__(self, redis_url: str, env: dict[str, Any]) -> None:
        self.redis_url, self.env = redis_url, env
        self.all: list[ChumonProcess] = []
        self.current = {"steps": self._start("steps"), "mail": self._start("mail")}
        self.steady = self._spawn(["--queues", *STEP_QUEUES, "--concurrency", "16"])  # never killed

    def _spawn(self, args: list[str]) -> ChumonProcess:
        process = WorkerProcess(self.redis_url, *args, app="jobs:registry", **self.env)
        self.all.append(process)
        return process

    def _start(self, role: str) -> ChumonProcess:
        queues = STEP_QUEUES if role == "steps" else ["notifications"]
        return self._spawn(["--queues", *queues, "--concurrency", "16"])

    def kill(self, role: str) -> float:
        """SIGKILL the role's worker, note when, start a fresh one."""
        victim = self.current[role]
        at = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        self.current[role] = self._start(role)
        return at

    def stop(self) -> None:
        for process in self.all:
            process.stop()


def run_chaos(redis: Redis, redis_url: str, style: str, plan: ChaosPlan) -> ChaosReport:
    started = time.monotonic()
    redis.flushdb()
    rng = random.Random(plan.seed)
    with SmtpSink(port=0, redis=redis, keys=OrderKeys()) as sink:
        settings = with_style(flow_settings(redis_url, sink.port), style)
        services = build_services(redis, settings)
        for sku, (_, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, 10 if sku == "POT" else 100_000, price)
        env = environment(style, sink.port, plan.voids)
        workers = Workers(redis_url, env)
        events: ChumonProcess = ChumonProcess(redis_url, "events", **env)
        producer = Producer(redis, settings, jobs.registry, services.orders)
        flow = Flow(redis, settings, services, producer, sink, OrderKeys())
        kills: list[tuple[float, str]] = []
        requeued: list[str] = []
        try:
            _ready(redis, style)
            stop = threading.Event()
            killer = threading.Thread(target=_killer, args=(workers, plan, rng, kills, stop), daemon=True)
            killer.start()
            ids: list[str] = []
            for i, order in enumerate(mix(random.Random(plan.seed), plan.orders)):
                ids.append(producer.place_order(**order).order_id)
                if i == plan.orders // 2:  # the upgraded writer, mid-run
                    for order_id in ids[: plan.gifts]:
                        wrap_gift(services.orders, order_id)
                stop.wait(plan.place_every)
            killer.join(timeout=120)
            events = _upgrade(redis_url, env, events)
            _settle(flow, ids, style, requeued)
        finally:
            stop.set()
            workers.stop()
            events.stop()
        report = flow.audit()
        chaos = _report(style, flow, ids, kills, report, time.monotonic() - started)
        chaos.requeued = len(requeued)
        return chaos


def _ready(redis: Redis, style: str) -> None:
    groups = set(GROUPS) if style == "choreographed" else {"projector"}

    def up() -> bool:
        if not redis.exists("chumon:events"):
            return False
        found = {g["name"].decode() for g in redis.xinfo_groups("chumon:events")}
        return redis.scard("rq:workers") >= 3 and groups <= found

    wait_until(up, timeout=90, message="the workers and the event consumers to start")


def _killer(workers: Workers, plan: ChaosPlan, rng: random.Random, kills: list[tuple[float, str]],
            stop: threading.Event) -> None:  # fmt: skip
    for n in range(plan.kills):
        if stop.wait(rng.uniform(*plan.kill_every)):  # the chaos schedule: a kill every so often
            return
        role = "mail" if n % 2 == 0 else "steps"
        kills.append((workers.kill(role), role))


def _upgrade(redis_url: str, env: dict[str, Any], events: ChumonProcess) -> ChumonProcess:
    """Replace `chumon events` by the upgraded one; hand every parked entry back to it."""
    events.stop()
    upgraded = ModuleProcess(redis_url, "tests.apps.upgrade", "events", **env)
    retry = ModuleProcess(redis_url, "tests.apps.upgrade", "events", "dlq", "retry", "--all", "--json", **env)
    code = retry.wait(timeout=60)
    assert code == 0, retry.output
    return upgraded


def _settle(flow: Flow, ids: list[str], style: str, requeued: list[str]) -> None:
    """Wait until every order is done. Meanwhile, as an operator would, requeue what the runtime
    dead-lettered: a job whose attempts all ended in SIGKILLs (the runtime counts a lost worker,
    and a prefetched job of it, as an attempt) flags its order, and its requeue must clear it."""
    dead = DeadLetters(flow.redis, flow.settings)
    next_look = [time.monotonic() + 5]

    def done() -> bool:
        if time.monotonic() >= next_look[0]:
            next_look[0] = time.monotonic() + 5
            requeued.extend(dead.requeue(all_=True))
        return not _stuck(flow, ids) and not read_side_differences(flow.producer, ids) and not _parked(flow)

    try:
        wait_until(done, timeout=240, message=f"every order to settle ({style})")
    except AssertionError as exc:  # say what is left, order by order
        details = {
            "stuck": [(s, flow.order(s.split()[0]).saga.history[-6:]) for s in _stuck(flow, ids)],
            "read side": read_side_differences(flow.producer, ids),
            "parked": _parked(flow),
        }
        raise AssertionError(f"{exc}: {details}") from None


def _stuck(flow: Flow, ids: list[str]) -> list[str]:
    stuck = []
    for order_id in ids:
        order = flow.order(order_id)
        saga = order.saga
        facts = saga.facts
        email = "confirmation" if order.status.value == "CONFIRMED" else "cancellation"
        emailed = email in facts.get("emails", {}) or email in facts.get("email_failures", {})
        if (
            order.status.value == "PENDING"
            or order.attention
            or saga.compensating
            or saga.pending_compensations
            or saga.late
            or not emailed
            or (order.status.value == "CONFIRMED" and not facts.get("inventory_committed"))
        ):
            stuck.append(f"{order_id} {order.status.value} {saga.status.value} {order.attention or ''}")
    return stuck


def _parked(flow: Flow) -> dict[str, int]:
    counts = {group: int(flow.redis.xlen(flow.keys.parked_events(group))) for group in GROUPS}
    return {group: n for group, n in counts.items() if n}


def _report(
    style: str, flow: Flow, ids: list[str], kills: list[tuple[float, str]], audit: Audit, seconds: float
) -> ChaosReport:
    emails = email_windows(flow, [at for at, role in kills if role == "mail"])
    orders = [flow.order(i) for i in ids]
    by_status: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    for order in orders:
        by_status[order.status.value] += 1
        if order.reason:
            reasons[order.reason.split(":")[0].split(" within")[0]] += 1
    return ChaosReport(
        style=style,
        orders=len(ids),
        by_status=dict(by_status),
        kills=kills,
        audit=audit,
        stuck=_stuck(flow, ids),
        read_side=read_side_differences(flow.producer, ids),
        parked=_parked(flow),
        duplicates=emails.duplicates,
        unexplained_duplicates=emails.unexplained,
        kills_in_window=emails.kills_in_window,
        window_ms=emails.window_ms,
        seconds=seconds,
        reasons=dict(reasons),
    )


@dataclass
class EmailWindows:
    duplicates: dict[str, int]
    unexplained: list[str]
    kills_in_window: int
    window_ms: dict[str, float]


def email_windows(flow: Flow, kills: list[float]) -> EmailWindows:
    """Every email's crash window, from the sink's raw records (when the server had the message)
    and the event log (when EmailSent was committed); each duplicate matched to a kill (of a
    worker that sends emails, at ``kills``) inside the window of its first copy."""
    received: dict[tuple[str, str], list[float]] = defaultdict(list)
    for message in sink_messages(flow.redis, flow.keys):
        received[(message["order_id"], message["kind"])].append(float(message["received_at"]))
    committed = _email_commits(flow)
    duplicates, unexplained, widths = {}, [], []
    for key, times in received.items():
        first, commit = min(times), committed.get(key)
        if commit is not None:
            widths.append(max(0.0, commit - first))
        if len(times) > 1:
            duplicates[f"{key[0]} {key[1]}"] = len(times)
            if not any(first - WINDOW_SLACK <= at <= (commit or first) for at in kills):
                unexplained.append(f"{key[0]} {key[1]}")
                print(f"unexplained duplicate {key}: received {times}, EmailSent {commit}, kills {kills}")
    hits = sum(
        any(min(t) - WINDOW_SLACK <= at <= committed.get(k, 0) for k, t in received.items()) for at in kills
    )
    window = {}
    if widths:
        ordered = sorted(widths)
        window = {
            "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1),
        }
    return EmailWindows(duplicates, unexplained, hits, window)


def explained_violations(violations: list[str], windows: EmailWindows) -> list[str]:
    """The audit's violations, less the duplicate emails a kill inside their window explains."""
    explained = [key.split() for key in set(windows.duplicates) - set(windows.unexplained)]
    return [
        v for v in violations
        if not any(v.startswith(order_id) and f"{kind} emails:" in v for order_id, kind in explained)
    ]  # fmt: skip


def _email_commits(flow: Flow) -> dict[tuple[str, str], float]:
    """When each (order, kind)'s EmailSent was committed: its stream entry's time (Redis's clock)."""
    commits: dict[tuple[str, str], float] = {}
    for entry_id, fields in flow.redis.xrange(flow.keys.events):
        if fields[b"type"] == b"EmailSent":
            kind = json.loads(fields[b"data"])["kind"]
            key = (fields[b"order_id"].decode(), kind)
            commits.setdefault(key, int(entry_id.decode().split("-")[0]) / 1000)
    return commits


def assert_clean(report: ChaosReport) -> None:
    """What every chaos run must show, whatever happened on the way."""
    windows = EmailWindows(report.duplicates, report.unexplained_duplicates, 0, {})
    violations = explained_violations(report.audit.violations, windows)
    assert report.stuck == [], report.stuck
    assert violations == [], violations
    assert report.unexplained_duplicates == [], report.unexplained_duplicates
    assert report.read_side == [], report.read_side
    assert report.parked == {}, report.parked
    assert not report.audit.pending and not report.audit.needs_attention


def skip_unless_chaos(config: Any) -> None:
    """Long runs belong to the chaos tier: run them with `make chaos` (pytest -m chaos)."""
    import pytest

    if "chaos" not in (config.option.markexpr or ""):
        pytest.skip("the long chaos tier: run it with `make chaos` (pytest -m chaos)")
