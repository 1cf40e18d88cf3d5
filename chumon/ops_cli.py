"""The operators' processes: ``dashboard``, ``scheduler``, ``smtp-sink``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from chumon.settings import Settings
from workers.cli import CliContext, serve_metrics

log = logging.getLogger("chumon.events")


def _settings(ctx: CliContext) -> Settings:
    assert isinstance(ctx.settings, Settings)
    return ctx.settings


def cmd_dashboard(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon.dashboard import serve

    try:
        options = serve.options(_settings(ctx).dashboard, host=args.host, port=args.port)
    except serve.Refused as exc:
        raise SystemExit(f"chumon dashboard: refusing to start: {exc}") from None
    serve.serve(ctx.redis(), ctx.settings, options)
    return 0


def cmd_scheduler(args: argparse.Namespace, ctx: CliContext) -> int:
    from chumon import scheduling
    from workers import Enqueuer

    redis = ctx.redis()
    scheduling.run(
        redis, Enqueuer(redis, ctx.settings), ctx.registry(None), interval=args.interval, burst=args.burst
    )
    return 0


def cmd_events(args: argparse.Namespace, ctx: CliContext) -> int:
    import signal
    import threading

    from chumon.bootstrap import order_service
    from orders.eventsproc import EventProcessors
    from orders.keys import OrderKeys

    settings = _settings(ctx)
    redis = ctx.redis()
    processors = EventProcessors(
        redis,
        OrderKeys(settings.key_prefix),
        order_service(redis, settings),
        choreographed=settings.saga.style == "choreographed",
        step_timeout=settings.saga.step_timeout,
        claim_after=settings.events.claim_after,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    serve_metrics(args.metrics_port, settings.metrics_host)
    processors.start()
    log.info(
        "events: projector%s running (%s style)",
        f" and {len(processors.reactors)} reactors" if processors.reactors else "",
        settings.saga.style,
    )
    while not done.wait(30):
        behind, seconds = processors.projector.lag()
        log.info(
            "projector: %d applied, %d events behind (%.1f s)", processors.projector.applied, behind, seconds
        )
    processors.stop()
    return 0


def cmd_metrics(args: argparse.Namespace, ctx: CliContext) -> int:
    import threading

    from prometheus_client import start_http_server

    from chumon.exporter import registry

    port = args.port or ctx.settings.metrics_port
    start_http_server(port, addr=ctx.settings.metrics_host, registry=registry(ctx.redis(), ctx.settings))
    log.info("metrics on http://%s:%d/metrics", ctx.settings.metrics_host, port)
    threading.Event().wait()
    return 0


def register(sub: Any) -> None:
    dash = sub.add_parser("dashboard", help="rq-dashboard's pages for chumon's jobs (localhost by default)")
    dash.add_argument("--host", help="bind address (default CHUMON_DASHBOARD__HOST, 127.0.0.1)")
    dash.add_argument("--port", type=int, help="port (default CHUMON_DASHBOARD__PORT, 9181)")
    dash.set_defaults(func=cmd_dashboard)
    sched = sub.add_parser("scheduler", help="rq-scheduler with chumon's periodic jobs, JSON only")
    sched.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
    sched.add_argument("--burst", action="store_true", help="enqueue what is due, then stop")
    sched.set_defaults(func=cmd_scheduler)
    events = sub.add_parser("events", help="the event log's consumers: the projector (and reactors)")
    events.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve this process's metrics (0: off)"
    )
    events.set_defaults(func=cmd_events)
    metrics = sub.add_parser("metrics", help="Prometheus exporter of queue, dead-letter and read-model state")
    metrics.add_argument("--port", type=int, help="port (default CHUMON_METRICS_PORT, 9300)")
    metrics.set_defaults(func=cmd_metrics)
