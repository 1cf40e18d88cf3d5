"""The operators' processes: ``dashboard``, ``scheduler``, ``events``, ``metrics``; and the
event consumers' dead letters: ``events dlq list|show|retry``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from chumon.settings import Settings
from workers.cli import (
    CliContext,
    NotFound,
    UsageError,
    count,
    emit,
    port,
    port_or_off,
    seconds,
    serve_metrics,
    table,
)

log = logging.getLogger("chumon.events")


def _settings(ctx: CliContext) -> Settings:
    assert isinstance(ctx.settings, Settings)
    return ctx.settings


def cmd_dashboard(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon.dashboard import serve

    try:
        options = serve.options(_settings(ctx).dashboard, host=args.host, port=args.port)
    except serve.Refused as exc:
        raise UsageError(f"dashboard: refusing to start: {exc}") from None
    serve.serve(ctx.redis(), ctx.settings, options)
    return 0


def cmd_scheduler(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon import scheduling
    from workers import Control, Enqueuer
    from workers.cli import UsageError
    from workers.errors import UnknownJobType

    registry = ctx.registry(args.app)
    try:
        registry.check()  # a schedule naming a missing job type, or a bad payload: say so at start
    except (ValueError, UnknownJobType) as exc:
        raise UsageError(f"--app / CHUMON_APP: {exc}") from None
    redis = ctx.redis()
    control = Control(redis, ctx.settings)
    scheduling.run(
        redis, Enqueuer(redis, ctx.settings), registry, control, interval=args.interval, burst=args.burst
    )
    return 0


def cmd_schedules_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon import scheduling

    rows = [found.as_dict() for _, found in sorted(scheduling.registered(ctx.redis()), key=lambda r: r[0])]

    def render(data: list[dict[str, Any]]) -> str:
        if not data:
            return "no schedules registered (a running `chumon scheduler` registers its app's)"
        cells = [(r["name"], r["job_type"], r["rule"], r["queue"], r["next_at"], r["next_job"] or "-")
                 for r in data]  # fmt: skip
        return table(cells, ["name", "job type", "rule", "queue", "next run", "next job"])

    emit(rows, args.json, render)
    return 0


def cmd_schedules_remove(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon import scheduling
    from workers import Control
    from workers.cli import NotFound

    redis = ctx.redis()
    if not scheduling.remove(redis, Control(redis, ctx.settings), args.name):
        raise NotFound(f"no schedule {args.name!r} (see `chumon schedules list`)")
    emit({"removed": args.name}, args.json, lambda d: f"schedule {d['removed']} removed")
    return 0


def cmd_events(args: argparse.Namespace, ctx: CliContext) -> int:
    """The event consumers and the saga watchdog, until SIGTERM or SIGINT, whatever Redis does;
    exits 2 on a configuration error it names (refused credentials, a server lacking a command)."""
    if getattr(args, "events_command", None):
        return int(args.events_func(args, ctx))
    if args.command == "events":
        log.warning("`chumon events` is now `chumon consumers`; the old name goes in the next release")
    import signal
    import threading

    from redis.exceptions import RedisError

    from chumon.bootstrap import order_service, order_shards
    from orders.eventsproc import EventProcessors

    settings = _settings(ctx)
    try:
        redis = ctx.redis()
    except ValueError as exc:
        print(f"chumon events: REDIS_URL {settings.redis_url!r} cannot be used: {exc}", file=sys.stderr)
        return 2
    processors = EventProcessors(
        redis,
        order_shards(redis, settings).all(),  # on Redis Cluster, every shard's stream
        order_service(redis, settings),
        choreographed=settings.saga.style == "choreographed",
        step_timeout=settings.saga.step_timeout,
        claim_after=settings.events.claim_after,
        max_deliveries=settings.events.max_deliveries,
        watchdog_interval=settings.saga.watchdog_interval,
        gather=settings.events.gather,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    serve_metrics(args.metrics_port, settings.metrics_host)
    processors.start()
    log.info(
        "events: projector%s and the saga watchdog running (%s style)",
        f", {len(processors.reactors)} reactors" if processors.reactors else "",
        settings.saga.style,
    )
    next_status = time.monotonic() + settings.events.status_interval
    while not done.wait(0.2) and not processors.stopped.is_set():
        if time.monotonic() < next_status:
            continue
        next_status = time.monotonic() + settings.events.status_interval
        try:
            behind, seconds = processors.projector.lag()
        except RedisError:  # the consumers' loops say so (once per outage) and wait it out
            continue
        parked = sum(processors.parked().values())
        log.info(
            "projector: %d applied, %d events behind (%.1f s); %d entries parked since start",
            processors.projector.applied, behind, seconds, parked,
        )  # fmt: skip
    processors.stop()
    if processors.fatal:
        print(f"chumon events: {processors.fatal}", file=sys.stderr)
        return 2
    return 0


# -- the event consumers' dead letters ---------------------------------------------------------------
def _groups(settings: Settings, only: str | None) -> list[str]:
    from orders.projector import GROUP
    from orders.reactors import SERVICES

    groups = [GROUP, *(f"reactor-{service}" for service in SERVICES)]
    if only is not None and only not in groups:
        raise NotFound(f"--group: no consumer group {only!r}; the groups are {', '.join(groups)}")
    return [only] if only else groups


def _parked_entries(ctx: CliContext, group: str) -> list[Any]:
    """The group's parked entries, one reader per shard (one on one Redis)."""
    from chumon.bootstrap import order_shards
    from workers.streams import ParkedEntries

    redis = ctx.redis()
    return [
        ParkedEntries(redis, group, keys.parking(group)) for keys in order_shards(redis, _settings(ctx)).all()
    ]


def _parked_row(parked: Any) -> dict[str, Any]:
    return {**parked.as_dict(), "order_id": parked.fields.get("order_id"), "type": parked.fields.get("type")}


def cmd_events_dlq_list(args: argparse.Namespace, ctx: CliContext) -> int:
    rows = [
        _parked_row(parked)
        for group in _groups(_settings(ctx), args.group)
        for shard in _parked_entries(ctx, group)
        for parked in shard.read(args.limit)
    ]

    def render(found: list[dict[str, Any]]) -> str:
        if not found:
            return "no parked entries"
        cells = [
            (r["group"], r["id"], r["order_id"] or "-", r["type"] or "-", r["deliveries"], r["reason"][:60])
            for r in found
        ]
        return table(cells, ["group", "parked id", "order", "event", "deliveries", "reason"])

    emit(rows, args.json, render)
    return 0


def cmd_events_dlq_show(args: argparse.Namespace, ctx: CliContext) -> int:
    for group in _groups(_settings(ctx), args.group):
        for shard in _parked_entries(ctx, group):
            parked = shard.get(args.parked_id)
            if parked is not None:
                row = _parked_row(parked)
                emit(row, args.json, lambda r: "\n".join(f"{k:<11} {v}" for k, v in r.items()))
                return 0
    print(f"chumon: no parked entry {args.parked_id}", file=sys.stderr)
    return 1


def cmd_events_dlq_retry(args: argparse.Namespace, ctx: CliContext) -> int:
    if not args.parked_ids and not args.all:
        print("chumon: name parked entries to retry, or pass --all", file=sys.stderr)
        return 2
    retried: dict[str, list[str]] = {}
    wanted = set(args.parked_ids)
    for group in _groups(_settings(ctx), args.group):
        for parked in _parked_entries(ctx, group):  # each shard's
            ids = [p.id for p in parked.read(100_000) if args.all or p.id in wanted]
            sent = parked.retry(ids)
            if sent:
                retried.setdefault(group, []).extend(sent)
            wanted -= set(sent)
    emit(
        {"retried": retried, "not_found": sorted(wanted)},
        args.json,
        lambda r: "\n".join(
            [
                f"{group}: {len(ids)} entr{'y' if len(ids) == 1 else 'ies'} sent back"
                for group, ids in retried.items()
            ]
            or ["nothing to retry"]
        ),
    )
    if wanted:  # on stderr, with the exit code: a script sees what was not there
        print(f"chumon: no parked entry {', '.join(sorted(wanted))}", file=sys.stderr)
    return 1 if wanted else 0


def cmd_metrics(args: argparse.Namespace, ctx: CliContext) -> int:
    import threading

    from prometheus_client import start_http_server

    from chumon.exporter import registry

    port = args.port or ctx.settings.metrics_port
    start_http_server(port, addr=ctx.settings.metrics_host, registry=registry(ctx.redis(), ctx.settings))
    log.info("metrics on http://%s:%d/metrics", ctx.settings.metrics_host, port)
    threading.Event().wait()
    return 0


cmd_metrics.on_cluster = True  # type: ignore[attr-defined]  # its runtime half runs on Redis Cluster
cmd_events.on_cluster = True  # type: ignore[attr-defined]  # every shard's consumers, and their parked entries


def register(sub: Any) -> None:
    dash = sub.add_parser("dashboard", help="rq-dashboard's pages for chumon's jobs (localhost by default)")
    dash.add_argument("--host", help="bind address (default CHUMON_DASHBOARD__HOST, 127.0.0.1)")
    dash.add_argument("--port", type=port, help="port (default CHUMON_DASHBOARD__PORT, 9181)")
    dash.set_defaults(func=cmd_dashboard)
    sched = sub.add_parser("scheduler", help="rq-scheduler running the app's schedules, JSON only")
    sched.add_argument("--interval", type=seconds, default=5.0, help="seconds between checks (default 5)")
    sched.add_argument("--burst", action="store_true", help="enqueue what is due, then stop")
    sched.add_argument("--app", metavar="MODULE:ATTR", help="the JobRegistry whose schedules to run")
    sched.set_defaults(func=cmd_scheduler)
    schedules = sub.add_parser("schedules", help="the app's repeatable jobs, as registered in Redis")
    schedules_sub = schedules.add_subparsers(dest="schedules_command", required=True)
    listing = schedules_sub.add_parser("list", help="every registered schedule and its next run")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_schedules_list)
    removing = schedules_sub.add_parser(
        "remove", help="stop a schedule (an app that still declares it registers it again at its next start)"
    )
    removing.add_argument("name", help="the schedule's name (see `chumon schedules list`)")
    removing.add_argument("--json", action="store_true", help="print JSON")
    removing.set_defaults(func=cmd_schedules_remove)
    events = sub.add_parser(  # `events`: its name until issue 14, kept as an alias for one release
        "consumers",
        aliases=["events"],
        help="the event log's consumers (projector, reactors, watchdog); `consumers dlq` their dead letters",
    )
    events.add_argument(
        "--metrics-port", type=port_or_off, metavar="PORT", help="serve this process's metrics (0: off)"
    )
    events.set_defaults(func=cmd_events)
    dlq = (
        events.add_subparsers(dest="events_command")
        .add_parser("dlq", help="entries the event consumers parked")
        .add_subparsers(dest="dlq_command", required=True)
    )
    listing = dlq.add_parser("list", help="parked entries, oldest first")
    listing.add_argument("--group", help="one consumer group (projector, reactor-payments, ...)")
    listing.add_argument(
        "--limit", type=count, default=100, help="per group (and shard, on Redis Cluster; default 100)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(events_func=cmd_events_dlq_list)
    show = dlq.add_parser("show", help="one parked entry, with its fields and reason")
    show.add_argument("parked_id", help="the parked entry's id (see `chumon events dlq list`)")
    show.add_argument("--group", help="look only in this consumer group")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(events_func=cmd_events_dlq_show)
    retry = dlq.add_parser("retry", help="send parked entries back to their group (after a fix or upgrade)")
    retry.add_argument("parked_ids", nargs="*", metavar="PARKED_ID", help="parked entries to send back")
    retry.add_argument("--group", help="only this group's entries")
    retry.add_argument("--all", action="store_true", help="every parked entry (of --group, or of all)")
    retry.add_argument("--json", action="store_true", help="print JSON")
    retry.set_defaults(events_func=cmd_events_dlq_retry)
    metrics = sub.add_parser("metrics", help="Prometheus exporter of queue, dead-letter and read-model state")
    metrics.add_argument("--port", type=port, help="port (default CHUMON_METRICS_PORT, 9300)")
    metrics.set_defaults(func=cmd_metrics)
