"""The runtime's commands: ``worker``, ``dlq ...``, ``job show``, ``queues``.

The ``chumon`` entry point (chumon/cli.py) mounts these beside the order flow's commands.
Every command that prints data takes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from pydantic import BaseModel
from redis import Redis

from workers.connection import is_cluster
from workers.control import Control
from workers.crew import Crew, served_queues
from workers.deadletter import DeadLetters
from workers.events import JobEvent, JobEvents, check_stream_id
from workers.flows import FlowNode
from workers.flows import tree as flow_tree
from workers.jobtypes import JobRegistry
from workers.jobview import JobInfo, load_job
from workers.keys import RELAY_SUFFIX, check_queue_name, is_dead_letter_queue
from workers.layout import Layout
from workers.queueindex import QueueIndex
from workers.settings import RuntimeSettings
from workers.worker import Worker


class Exit(IntEnum):
    """Every command's exit codes (the README lists them)."""

    OK = 0
    NOT_FOUND = 1  # no job, order, SKU or queue by that name; some ids given were not found
    USAGE = 2  # a bad flag, argument or setting, named in the message (argparse uses 2 as well)
    REDIS = 3  # Redis did not answer, or refused the command
    CANCELLED = 4  # order place --wait: the order ended cancelled
    TIMED_OUT = 5  # order place --wait: no end within --timeout


class UsageError(ValueError):
    """A user's mistake, in a message that names the flag or setting: printed as one line, exit 2."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def unmasked(text: str) -> str:
    return text


@dataclass
class CliContext:
    settings: RuntimeSettings
    redis: Callable[[], Redis]
    registry: Callable[[str | None], JobRegistry]
    mask: Callable[[str], str] = unmasked  # the app's masking of personal data (dlq show, dlq list)


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


N = TypeVar("N", int, float)


def ranged(cast: Callable[[str], N], low: N, high: N, what: str, name: str) -> Callable[[str], N]:
    """An argparse type: the text as ``cast`` reads it, from ``low`` to ``high``; else an error
    saying what it must be (``nan`` and ``1e400`` are refused by the comparison)."""

    def parse(text: str) -> N:
        try:
            value: N | None = cast(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = name
    return parse


count = ranged(int, 1, sys.maxsize, "a whole number of at least 1", "count")  # --limit
whole = ranged(int, 0, sys.maxsize, "a whole number, 0 or more", "whole")  # --keep, --seed
seconds = ranged(  # --timeout, --interval
    float, math.nextafter(0.0, 1.0), 86400.0, "a number of seconds above 0 and at most 86400", "seconds"
)
fraction = ranged(float, 0.0, 1.0, "a chance from 0 to 1", "fraction")  # --crash-rate
concurrency = ranged(int, 1, 1024, "a number of slots from 1 to 1024", "concurrency")
async_concurrency = ranged(int, 1, 10_000, "a number of async slots from 1 to 10000", "async_concurrency")
event_count = ranged(int, 1, 10_000, "a number of events from 1 to 10000", "event_count")


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return int(text)


def port_or_off(text: str) -> int:
    """A TCP port, or 0 for none (``--metrics-port``)."""
    return 0 if text.strip() == "0" else port(text)


def emit(
    data: Any, as_json: bool, render: Callable[[Any], str], mask: Callable[[str], str] = unmasked
) -> None:
    if as_json:
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        elif isinstance(data, list):
            data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
        print(mask(json.dumps(data, indent=2, default=str)))
    else:
        print(mask(render(data)))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_job(info: JobInfo) -> str:
    lines = [
        f"job {info.id}  {info.job_type or '?'}  queue={info.queue}  status={info.status}",
        f"  attempt {info.attempt}" + (f" of {info.max_attempts}" if info.max_attempts else ""),
        f"  payload {json.dumps(info.payload)}",
        "  " + _times(("created", info.created_at), ("enqueued", info.enqueued_at)),
        "  " + _times(("started", info.started_at), ("ended", info.ended_at), none="not started yet"),
    ]
    if info.next_run_at:
        lines.append(f"  next run at {info.next_run_at}")
    if info.dead_lettered_at:
        lines.append(f"  dead-lettered at {info.dead_lettered_at}: {info.dead_letter_reason}")
    if info.problem:
        lines.append(f"  problem: {info.problem}")
    if info.result is not None:
        lines.append(f"  result {json.dumps(info.result)}")
    if info.progress is not None:
        lines.append(f"  progress {json.dumps(info.progress)}")
    if info.logs:
        lines.append(f"  log (last {len(info.logs)} lines):")
        lines.extend("    " + line for line in info.logs)
    for failure in info.failures:
        lines.append(
            f"  - attempt {failure.get('attempt')} {failure.get('ended_at')}: "
            f"{failure.get('exc_type')}: {failure.get('message')}"
        )
        trace = str(failure.get("traceback") or "").rstrip()
        lines.extend("      " + line for line in trace.splitlines())
    return "\n".join(lines)


def _times(*pairs: tuple[str, Any], none: str = "-") -> str:
    """'started 2026-... ended 2026-...', leaving out what has not happened."""
    return "  ".join(f"{name} {when}" for name, when in pairs if when) or none


def render_dead_letters(entries: list[JobInfo]) -> str:
    if not entries:
        return "no dead letters"
    rows = [
        (
            e.id,
            e.queue,
            e.job_type or "?",
            e.dead_lettered_at,
            e.attempt,
            (e.last_error or e.problem or "")[:60],
        )
        for e in entries
    ]
    return table(rows, ["job id", "queue", "type", "dead-lettered at", "attempts", "last error"])


# -- commands ---------------------------------------------------------------------------------
def serve_metrics(port: int | None, host: str) -> None:
    """Expose this process's metrics (prometheus-client's default registry) on ``port``."""
    if port:
        from prometheus_client import start_http_server

        try:
            start_http_server(port, addr=host)
        except OSError as exc:  # metrics are worth having, not worth refusing to work for
            logging.getLogger("chumon.metrics").error("metrics not served on %s:%d: %s", host, port, exc)


def cmd_worker(args: argparse.Namespace, ctx: CliContext) -> int:
    registry = ctx.registry(args.app)
    redis = ctx.redis()
    queues = list(args.queues or registry.queues())
    # on Redis Cluster, one worker per queue (and sub-queue), in this one process (workers/crew.py)
    groups = served_queues(
        queues,
        ctx.settings.queue_split,
        is_cluster(redis),
        sharded=registry.sharded,
        shards=ctx.settings.shards,
    )
    try:
        workers = [
            Worker(
                redis,
                registry,
                ctx.settings,
                queues=group,
                concurrency=args.concurrency,
                async_concurrency=args.async_concurrency,
                name=f"{args.name}.{group[0].replace('#', '-')}"
                if args.name and len(groups) > 1
                else args.name,
            )
            for group in groups
        ]
    except ValueError as exc:
        raise UsageError(f"--queues: {exc}") from None
    serve_metrics(args.metrics_port, ctx.settings.metrics_host)
    if len(workers) == 1:
        workers[0].run(burst=args.burst)
    else:
        Crew(workers).run(burst=args.burst)
    return Exit.OK


def _member_name(name: str | None, queue: str) -> str | None:
    """A crew member's worker name: the one given, followed by its queue."""
    return f"{name}.{queue.replace('#', '-')}" if name else None


def cmd_dlq_list(args: argparse.Namespace, ctx: CliContext) -> int:
    entries = DeadLetters(ctx.redis(), ctx.settings).entries(args.queue)
    emit(entries, args.json, render_dead_letters, unmasked if args.reveal else ctx.mask)
    return 0


def cmd_dlq_show(args: argparse.Namespace, ctx: CliContext) -> int:
    info = DeadLetters(ctx.redis(), ctx.settings).show(args.job_id)
    if info is None:
        raise NotFound(f"no dead letter {args.job_id} (see `chumon dlq list`)")
    emit(info, args.json, render_job, unmasked if args.reveal else ctx.mask)
    return 0


def cmd_dlq_requeue(args: argparse.Namespace, ctx: CliContext) -> int:
    if bool(args.job_ids) == bool(args.all):
        raise UsageError("give JOB_ID... or --all (not both)")
    dead = DeadLetters(ctx.redis(), ctx.settings)
    _known_queue(dead, args.queue)
    ids = dead.requeue(args.job_ids, queue=args.queue, all_=args.all)
    missing = [job_id for job_id in args.job_ids if job_id not in ids]
    report = {"requeued": ids, "not_dead_letters": missing}

    emit(report, args.json, lambda d: f"requeued {len(d['requeued'])} dead letter(s)")
    for job_id in missing:  # on stderr, with the exit code: a script sees what was not there
        print(
            f"chumon: not a dead letter{' of ' + args.queue if args.queue else ''}: {job_id}", file=sys.stderr
        )
    return Exit.NOT_FOUND if missing else Exit.OK


def cmd_dlq_purge(args: argparse.Namespace, ctx: CliContext) -> int:
    dead = DeadLetters(ctx.redis(), ctx.settings)
    _known_queue(dead, args.queue)
    removed = dead.purge(args.queue, older_than=args.older_than)
    emit({"purged": removed}, args.json, lambda d: f"purged {d['purged']} dead letter(s)")
    return Exit.OK


class NotFound(LookupError):
    """Nothing by that name: printed as one line, exit 1."""


def _known_queue(dead: DeadLetters, queue: str | None) -> None:
    if queue is not None and not set(dead.matching(queue)) & set(dead.origins()):
        raise NotFound(f"queue {queue!r} has no dead letters (see `chumon queues`)")


def cmd_job_show(args: argparse.Namespace, ctx: CliContext) -> int:
    redis = ctx.redis()
    keys = Layout(redis, ctx.settings).locate(args.job_id)  # on a cluster, the slot holding it
    info = load_job(redis, keys, args.job_id) if keys is not None else None
    if info is None:
        raise NotFound(f"no job {args.job_id}")
    emit(info, args.json, render_job, unmasked if args.reveal else ctx.mask)
    return 0


def render_tree(node: FlowNode) -> str:
    """A flow as an indented tree, one job a line."""

    def line(n: FlowNode) -> str:
        text = f"{n.id}  {n.job_type or '?'}  queue={n.queue or '?'}  {n.status}"
        if n.waiting_for:
            text += f" (waiting for {n.waiting_for} of {len(n.children)} children)"
        return text + (f"  [{n.on_failure}]" if n.on_failure else "")

    lines = [line(node)]

    def walk(n: FlowNode, indent: str) -> None:
        for i, child in enumerate(n.children):
            last = i == len(n.children) - 1
            lines.append(f"{indent}{'└── ' if last else '├── '}{line(child)}")
            walk(child, indent + ("    " if last else "│   "))

    walk(node, "")
    return "\n".join(lines)


def cmd_job_tree(args: argparse.Namespace, ctx: CliContext) -> int:
    redis = ctx.redis()
    keys = Layout(redis, ctx.settings).locate(args.job_id)  # on a cluster, the slot holding it
    found = flow_tree(redis, keys, args.job_id) if keys is not None else None
    if found is None:
        raise NotFound(f"no job {args.job_id}")
    emit(found, args.json, render_tree)
    return Exit.OK


def render_event(event: JobEvent) -> str:
    details = "".join(f" {k}={v}" for k, v in event.fields.items())
    return f"{event.id}  {event.event:<13} {event.job_id}  queue={event.queue}{details}"


def cmd_job_events(args: argparse.Namespace, ctx: CliContext) -> int:
    """Print job lifecycle events: the latest, those after --from, then (--follow) new ones."""
    queue = args.queue
    if is_cluster(ctx.redis()) and queue is None:  # each queue's slot has its own stream there
        if args.job is None:
            raise UsageError(
                "on Redis Cluster each queue's slot has its own event stream: give --queue or --job"
            )
        located = Layout(ctx.redis(), ctx.settings).locate(args.job)
        if located is None or located.tag is None:
            raise NotFound(f"no job {args.job}")
        queue = located.tag
    if args.from_id is not None:
        try:
            check_stream_id(args.from_id)
        except ValueError as exc:
            raise UsageError(f"--from: {exc}") from None
    if not ctx.settings.job_events:
        print("note: job events are off (CHUMON_JOB_EVENTS=1 turns them on)", file=sys.stderr)
    events = JobEvents(ctx.redis(), ctx.settings, queue=queue)

    def wanted(event: JobEvent) -> bool:
        return (args.queue is None or event.queue == args.queue) and (
            args.job is None or event.job_id == args.job
        )

    if args.from_id is not None:
        found = events.read(args.from_id, count=args.count)
    else:
        found = events.latest(args.count)
    shown = [e for e in found if wanted(e)]
    if not args.follow:
        emit([e.as_dict() for e in shown], args.json, lambda _: "\n".join(render_event(e) for e in shown))
        return Exit.OK
    for event in shown:
        print(json.dumps(event.as_dict()) if args.json else render_event(event), flush=True)
    after = found[-1].id if found else (args.from_id or "0-0")  # empty when read: all that comes
    try:
        for event in events.follow(after, block=1.0):
            if wanted(event):
                print(json.dumps(event.as_dict()) if args.json else render_event(event), flush=True)
    except KeyboardInterrupt:
        pass
    return Exit.OK


def cmd_queues(args: argparse.Namespace, ctx: CliContext) -> int:
    redis = ctx.redis()
    control = Control(redis, ctx.settings)
    layout = control.layout
    found: set[str] = set()
    for family_keys in layout.every_keys():  # on a cluster, each queue's tag lists its queues
        found.update(QueueIndex(redis, family_keys, log=logging.getLogger(__name__)).names())
    names = sorted(name for name in found if not name.endswith(RELAY_SUFFIX))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            keys = layout.keys(name)
            pipe.llen(keys.queue(name))
            pipe.zcard(keys.scheduled(name))
            pipe.zcard(keys.wip(name))
        counts = [c if isinstance(c, int) else None for c in pipe.execute(raise_on_error=False)]
    flows = control.flows(names)
    rows = [
        {
            "queue": name,
            "dead_letter": is_dead_letter_queue(name),
            "queued": counts[3 * i],
            "prioritized": flows[i].prioritized,
            "scheduled": counts[3 * i + 1],
            "started": counts[3 * i + 2],
            "paused": flows[i].paused,
            "rate_limit": flows[i].rate_limit,
            "throttled_for": flows[i].throttled_for,
        }
        for i, name in enumerate(names)
    ]
    emit(rows, args.json, render_queues)
    return 0


def render_queues(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no queues yet"

    def state(r: dict[str, Any]) -> str:
        parts = ["dead letters" if r["dead_letter"] else ""]
        parts += ["PAUSED" if r["paused"] else ""]
        parts += [f"limit {r['rate_limit']}" if r["rate_limit"] else ""]
        parts += [f"slowed down {r['throttled_for']:.1f}s" if r["throttled_for"] else ""]
        return ", ".join(p for p in parts if p)

    return table(
        [(r["queue"], r["queued"], r["prioritized"], r["scheduled"], r["started"], state(r)) for r in rows],
        ["queue", "queued", "prioritized", "scheduled", "started", "state"],
    )


def cmd_queues_pause(args: argparse.Namespace, ctx: CliContext) -> int:
    return _pause_or_resume(args, ctx, pause=True)


def cmd_queues_resume(args: argparse.Namespace, ctx: CliContext) -> int:
    return _pause_or_resume(args, ctx, pause=False)


def _pause_or_resume(args: argparse.Namespace, ctx: CliContext, *, pause: bool) -> int:
    for queue in args.queues:
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise UsageError(f"QUEUE: {exc}") from None
    control = Control(ctx.redis(), ctx.settings)
    verb = "paused" if pause else "resumed"
    changed = [q for q in args.queues if (control.pause(q) if pause else control.resume(q))]
    report = {verb: changed, "unchanged": [q for q in args.queues if q not in changed]}

    def render(d: dict[str, Any]) -> str:
        lines = [f"{verb} {q}" for q in d[verb]]
        lines += [f"{q} was already {verb}" for q in d["unchanged"]]
        return "\n".join(lines)

    emit(report, args.json, render)
    return Exit.OK


def cmd_job_cancel(args: argparse.Namespace, ctx: CliContext) -> int:
    control = Control(ctx.redis(), ctx.settings)
    results = [control.cancel(job_id) for job_id in args.job_ids]
    rows = [{"job_id": r.job_id, "status": r.status or None, "action": r.action} for r in results]
    said = {
        "removed": "removed from its queue: canceled",
        "asked": "running: asked to stop (the handler sees ctx.cancelled)",
        "nothing": "already {status}: left as it is",
        "missing": "no such job",
    }

    def render(data: list[dict[str, Any]]) -> str:
        return "\n".join(
            f"{r['job_id']}: " + said.get(r["action"], r["action"]).format(status=r["status"]) for r in data
        )

    emit(rows, args.json, render)
    missing = [r.job_id for r in results if r.action == "missing"]
    for job_id in missing:  # on stderr too, with the exit code: a script sees what was not there
        print(f"chumon: no job {job_id}", file=sys.stderr)
    return Exit.NOT_FOUND if missing else Exit.OK


def register(sub: Any) -> None:
    """Add the runtime's commands to an argparse subparsers object."""
    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument(
        "--queues",
        "-q",
        nargs="+",
        metavar="Q",
        help="queues in priority order (default: every queue of the app)",
    )
    worker.add_argument(
        "--concurrency", "-c", type=concurrency, metavar="N", help="jobs run at once, 1-1024 (default 8)"
    )
    worker.add_argument(
        "--async-concurrency", type=async_concurrency, metavar="N",
        help="async def jobs run at once on the event loop, 1-10000 (default 100)",
    )  # fmt: skip
    worker.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    worker.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="the JobRegistry to serve, imported from the current folder first (default: CHUMON_APP, "
        "jobs:registry)",
    )
    worker.add_argument("--name", help="worker name (default: host.pid.random)")
    worker.add_argument(
        "--metrics-port", type=port_or_off, metavar="PORT", help="serve this process's metrics (0: off)"
    )
    worker.set_defaults(func=cmd_worker)

    dlq = sub.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="dlq_command", required=True)
    listing = dlq.add_parser("list", help="list dead letters")
    listing.add_argument("--queue", metavar="Q", help="only the dead letters of this queue")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--reveal", action="store_true", help="show emails and payment tokens unmasked")
    listing.set_defaults(func=cmd_dlq_list)
    show = dlq.add_parser("show", help="one dead letter with every attempt's failure and traceback")
    show.add_argument("job_id", help="the dead letter's job id (see `chumon dlq list`)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--reveal", action="store_true", help="show emails and payment tokens unmasked")
    show.set_defaults(func=cmd_dlq_show)
    requeue = dlq.add_parser("requeue", help="back to the origin queue with a fresh attempt budget")
    requeue.add_argument("job_ids", nargs="*", metavar="JOB_ID", help="dead letters to requeue")
    requeue.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
    requeue.add_argument("--queue", metavar="Q", help="only dead letters of this queue")
    requeue.add_argument("--json", action="store_true", help="print JSON")
    requeue.set_defaults(func=cmd_dlq_requeue)
    purge = dlq.add_parser("purge", help="delete dead letters")
    purge.add_argument("--queue", metavar="Q", help="only this queue's dead letters (default: every queue)")
    purge.add_argument("--older-than", type=parse_duration, metavar="DURATION", help="e.g. 30m, 12h, 7d")
    purge.add_argument("--json", action="store_true", help="print JSON")
    purge.set_defaults(func=cmd_dlq_purge)

    job = sub.add_parser("job", help="jobs").add_subparsers(dest="job_command", required=True)
    job_show = job.add_parser("show", help="one job: status, attempts, failures, result")
    job_show.add_argument("job_id", help="the job's id (enqueue returned it)")
    job_show.add_argument("--json", action="store_true", help="print JSON")
    job_show.add_argument("--reveal", action="store_true", help="show emails and payment tokens unmasked")
    job_show.set_defaults(func=cmd_job_show)
    job_cancel = job.add_parser("cancel", help="remove waiting jobs; ask running ones to stop (idempotent)")
    job_cancel.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="jobs to cancel")
    job_cancel.add_argument("--json", action="store_true", help="print JSON")
    job_cancel.set_defaults(func=cmd_job_cancel)
    job_tree = job.add_parser("tree", help="the flow a job belongs to, from its root: each job's status")
    job_tree.add_argument("job_id", help="the job's id")
    job_tree.add_argument("--json", action="store_true", help="print JSON")
    job_tree.set_defaults(func=cmd_job_tree)
    job_events = job.add_parser("events", help="job lifecycle events (CHUMON_JOB_EVENTS=1)")
    job_events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    job_events.add_argument("--from", dest="from_id", metavar="ID", help="events after this id (0: oldest)")
    job_events.add_argument(
        "--count", type=event_count, default=50, metavar="N", help="at most N at first (50)"
    )
    job_events.add_argument("--queue", metavar="Q", help="only this queue's jobs")
    job_events.add_argument("--job", metavar="JOB_ID", help="only this job")
    job_events.add_argument("--json", action="store_true", help="a JSON list (--follow: one object a line)")
    job_events.set_defaults(func=cmd_job_events)

    queues = sub.add_parser(
        "queues", help="queue depths and state (paused, rate limit), dead-letter queues included"
    )
    queues.add_argument("--json", action="store_true", help="print JSON")
    queues.set_defaults(func=cmd_queues)
    queue_sub = queues.add_subparsers(dest="queues_command", required=False)
    for name, func, text in (
        ("pause", cmd_queues_pause, "stop every worker claiming from these queues (running jobs go on)"),
        ("resume", cmd_queues_resume, "let workers claim from these queues again"),
    ):
        action = queue_sub.add_parser(name, help=text)
        action.add_argument("queues", nargs="+", metavar="QUEUE", help="queue names")
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(func=func)
