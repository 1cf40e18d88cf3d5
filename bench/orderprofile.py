"""Where an order's time goes: ``python -m bench.orderprofile [--orders N] [--monitor] [--py-spy]``.

Runs the order flow as ``python -m bench --only orders`` does (the Procfile's processes,
bench/orderflow.py), places a warm-up, then a burst of N orders, and reports per order over
the burst (from the first placement to the last order settled: confirmed, stock committed,
email sent):

- CPU per process, from /proc/<pid>/stat (user + system): each Procfile process, Redis
  (``INFO server`` process_id) and this process (placing the orders, watching the stream);
- Redis's own counters, deltas of ``INFO commandstats`` (calls and µs by command; on Redis 7
  a script's commands count there too, inside its EVALSHA's µs), ``INFO stats`` (commands,
  network bytes in and out) and ``INFO cpu``;
- with ``--monitor``, a second burst under ``redis-cli monitor``: the commands each process
  sends (round trips; a pipeline counts each command it carries), the script calls by script
  name (matched by SHA1), and the commands the scripts run. MONITOR costs Redis time, so its
  burst is not the one the CPU figures come from;
- with ``--py-spy``, a third burst with ``py-spy record`` on every Procfile process: the
  functions holding each process's samples (own time) and the areas (redis-py, pydantic, ...).

With ``--kept 1000,10000,100000``, instead: the cost per order and the p99 at a fixed rate with
that many orders kept, the orders beyond the first real ones being copies of them
(bench/orderfill.py; docs/performance.md, "Cost growth").

The numbers are per order: divide by nothing else. ``--json`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import orderflow
from bench.drain import RunFailed
from bench.eventlog import percentile
from bench.orderflow import Flow, place_burst, place_paced, running_flow, settle
from bench.redisenv import RedisEnv, redis_cli, redis_env
from bench.roundtrips import END_MARK, Monitor, parse
from chumon.progress import Progress
from workers.codec import texts
from workers.scripts import source

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
AREAS = (
    ("redis/", "redis-py"),
    ("hiredis", "redis-py"),
    ("pydantic", "pydantic"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("chumon/logs.py", "logging"),
    ("prometheus_client", "metrics"),
    ("threading.py", "threads"),
    ("queue.py", "threads"),
    ("socket.py", "socket"),
    ("selectors.py", "socket"),
    ("orders/", "orders code"),
    ("jobs/", "orders code"),
    ("workers/", "runtime code"),
)


INCLUSIVE = (
    ("orders/handlers.py", "order handlers (all they call)"),
    ("Worker._step (", "runtime: claim/settle round (step.lua call and its parsing)"),
    ("Listener.run", "runtime: listener"),
    ("Projector.process", "projector"),
    ("Reactor.process", "reactors"),
    ("OrderStore.load", "OrderStore.load"),
    ("OrderStore.commit", "OrderStore.commit"),
    ("build_message", "email: build_message"),
    ("SMTP.send_message", "email: smtplib send_message"),
    ("SmtpMailer._connect", "email: connect"),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def pids(flow: Flow) -> dict[str, int]:
    found = {name: proc.pid for name, proc in flow.processes}
    found["redis-server"] = int(flow.env.info("server")["process_id"])
    found["bench (places, watches)"] = os.getpid()
    return found


def ports(pid: int) -> set[int]:
    """Local TCP ports of a process's sockets (/proc/<pid>/fd against /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] in inodes:
                found.add(int(cols[1].rsplit(":", 1)[1], 16))
    return found


def script_names() -> dict[str, str]:
    """SHA1 -> script name, for every script of the runtime and of the orders package."""
    names = {}
    for package in ("workers", "orders"):
        for path in sorted((Path(__file__).resolve().parent.parent / package / "lua").glob("*.lua")):
            names[hashlib.sha1(source(path.stem, package).encode()).hexdigest()] = f"{package}/{path.stem}"
    return names


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]
    stats: dict[str, Any]
    commands: dict[str, Any]
    redis_cpu: float


def snapshot(env: RedisEnv, processes: dict[str, int]) -> Snapshot:
    cpu = {name: cpu_seconds(pid) for name, pid in processes.items()}
    info = env.info("cpu")
    return Snapshot(
        time.monotonic(),
        cpu,
        env.info("stats"),
        env.info("commandstats"),
        float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
    )


PROCFILE: Path | None = None  # --procfile
KEEP_RAW: Path | None = None  # --keep-raw


def burst(env: RedisEnv, style: str, orders: int, threads: int, label: str, during: Any = None) -> Any:
    """Warm up, then run ``during(flow)`` around a burst of ``orders``; returns its result."""
    with running_flow(env, style, PROCFILE) as flow:
        settle(flow, place_burst(flow, 50, 1, 0), f"{label} warm-up", 60)
        time.sleep(0.5)  # let the warm-up's tail (emails, commits) finish
        return during(flow, lambda: _place_and_settle(flow, orders, threads, label))


def _place_and_settle(flow: Flow, orders: int, threads: int, label: str) -> None:
    ids = place_burst(flow, orders, threads, len(flow.placed))
    settle(flow, ids, label, max(120.0, orders / 10))


# -- pass 1: CPU and Redis counters ------------------------------------------------------------------
def measure_cpu(env: RedisEnv, style: str, orders: int, threads: int) -> dict[str, Any]:
    def during(flow: Flow, run: Any) -> dict[str, Any]:
        processes = pids(flow)
        before = snapshot(env, processes)
        run()
        after = snapshot(env, processes)
        return per_order(before, after, orders)

    result: dict[str, Any] = burst(env, style, orders, threads, f"{style} burst (CPU)", during)
    return result


def per_order(before: Snapshot, after: Snapshot, orders: int) -> dict[str, Any]:
    seconds = after.at - before.at
    cpu_us = {name: (after.cpu[name] - before.cpu[name]) / orders * 1e6 for name in after.cpu}
    commands = {}
    for name, stats in after.commands.items():
        was = before.commands.get(name, {"calls": 0, "usec": 0})
        calls = int(stats["calls"]) - int(was["calls"])
        if calls:
            commands[name.removeprefix("cmdstat_")] = {
                "calls": round(calls / orders, 2),
                "usec": round((int(stats["usec"]) - int(was["usec"])) / orders, 1),
            }

    def stat(key: str) -> float:
        return (int(after.stats[key]) - int(before.stats[key])) / orders

    return {
        "orders": orders,
        "seconds": round(seconds, 2),
        "orders_per_second": round(orders / seconds, 1),
        "cpu_us_per_order": {k: round(v) for k, v in sorted(cpu_us.items(), key=lambda kv: -kv[1])},
        "cpu_us_total": round(sum(cpu_us.values())),
        "cpu_busy_of_2_cores": round(sum(cpu_us.values()) * orders / 1e6 / seconds / 2, 2),
        "redis_info_cpu_us": round((after.redis_cpu - before.redis_cpu) / orders * 1e6),
        "commands_per_order": round(stat("total_commands_processed"), 1),
        "net_in_bytes": round(stat("total_net_input_bytes")),
        "net_out_bytes": round(stat("total_net_output_bytes")),
        "commandstats": dict(sorted(commands.items(), key=lambda kv: -kv[1]["usec"])),
    }


# -- pass 2: MONITOR -------------------------------------------------------------------------------------
def measure_monitor(env: RedisEnv, style: str, orders: int, threads: int) -> dict[str, Any]:
    cli = redis_cli()
    if cli is None:
        raise RunFailed("no redis-cli for MONITOR")
    shas = script_names()

    def during(flow: Flow, run: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
            monitor = Monitor(cli, env.url, Path(tmp) / "monitor.log")
            try:
                env.redis.echo("bench:monitor:start")
                run()
                by_port = {port: name for name, pid in pids(flow).items() for port in ports(pid)}
                env.redis.echo(END_MARK)
                monitor.wait_for(END_MARK, timeout=120)
            finally:
                monitor.stop()
            return tally(monitor.lines(), by_port, shas, orders)

    result: dict[str, Any] = burst(env, style, orders, threads, f"{style} burst (MONITOR)", during)
    return result


def tally(lines: Any, by_port: dict[int, str], shas: dict[str, str], orders: int) -> dict[str, Any]:
    sent: dict[str, Counter[str]] = {}
    inside: Counter[str] = Counter()
    scripts: Counter[str] = Counter()
    started = False
    for line in lines:
        parsed = parse(line)
        if parsed is None:
            continue
        source_, command = parsed
        if not started:
            started = command == "echo" and "bench:monitor:start" in line
            continue
        if command == "echo" and END_MARK in line:
            break
        if source_ == "lua":
            inside[command] += 1
            continue
        port = int(source_.rsplit(":", 1)[1]) if ":" in source_ else -1
        who = by_port.get(port, "other (closed connection)")
        sent.setdefault(who, Counter())[command] += 1
        if command in ("evalsha", "eval"):
            sha = line.split('"')[3] if command == "evalsha" else "eval"
            scripts[f"{who}: {shas.get(sha, sha[:8])}"] += 1

    def per(counter: Counter[str]) -> dict[str, float]:
        return {k: round(v / orders, 2) for k, v in counter.most_common()}

    return {
        "round_trips_per_order": round(sum(sum(c.values()) for c in sent.values()) / orders, 1),
        "by_process": {
            who: {"commands": round(sum(c.values()) / orders, 2), **per(c)} for who, c in sorted(sent.items())
        },
        "script_calls": per(scripts),
        "inside_scripts": per(inside),
        "inside_scripts_total": round(sum(inside.values()) / orders, 1),
    }


# -- pass: cost growth ---------------------------------------------------------------------------------
def measure_growth(env: RedisEnv, style: str, orders: int, threads: int, bursts: int) -> list[dict[str, Any]]:
    """``bursts`` bursts of ``orders`` one after the other on the same Redis: does an order cost
    more (CPU, Redis time, commands) as the orders kept, the stream and the indexes grow? With
    the memory kept per order, and per event of the stream."""
    from orders.keys import OrderKeys

    events_key = OrderKeys().events

    def during(flow: Flow, run: Any) -> list[dict[str, Any]]:
        rows = []
        for number in range(bursts):
            processes = pids(flow)
            memory_before = int(env.info("memory")["used_memory"])
            before = snapshot(env, processes)
            ids = place_burst(flow, orders, threads, len(flow.placed))
            settle(flow, ids, f"{style} growth burst {number + 1}/{bursts}", max(120.0, orders / 10))
            after = snapshot(env, processes)
            time.sleep(0.5)  # the tail of the burst (emails, commits) lands before memory is read
            memory_after = int(env.info("memory")["used_memory"])
            cost = per_order(before, after, orders)
            events = int(env.redis.xlen(events_key))
            stream_bytes = int(env.redis.memory_usage(events_key, samples=0) or 0)
            rows.append({
                "orders_kept_before": len(flow.placed) - orders,
                "orders_per_second": cost["orders_per_second"],
                "cpu_us_total": cost["cpu_us_total"],
                "redis_info_cpu_us": cost["redis_info_cpu_us"],
                "commands_per_order": cost["commands_per_order"],
                "memory_per_order_bytes": round((memory_after - memory_before) / orders),
                "stream_entries": events,
                "stream_bytes_per_event": round(stream_bytes / max(1, events)),
            })  # fmt: skip
        return rows

    result: list[dict[str, Any]] = burst(env, style, 0, threads, f"{style} growth", during)
    return result


# -- pass: cost growth with N orders kept (copies) -------------------------------------------------------
TEMPLATES = 200  # real orders the copies are made from


def measure_kept(
    env: RedisEnv, style: str, levels: list[int], orders: int, threads: int, rate: float
) -> dict[str, Any]:
    """Cost per order, and the latency at a fixed ``rate``, with each of ``levels`` orders kept.

    The first orders are real: a warm-up and ``TEMPLATES`` orders placed through the flow. The
    flow is stopped, Redis is filled up to the level with copies of them (bench/orderfill.py:
    every key they left, with fresh ids), the flow is started again on the same Redis, and
    measured: a warm-up of 50 orders, a burst of ``orders`` (CPU, Redis, commands, as the
    CPU pass), then ``rate`` orders/s for 10 s (place -> CONFIRMED, as the budget pass). The
    measured orders are real and stay kept: the next level starts with them."""
    from bench import orderfill
    from orders.keys import OrderKeys

    okeys = OrderKeys()
    with running_flow(env, style, PROCFILE) as flow:
        settle(flow, place_burst(flow, 50, 1, 0), f"{style} kept: warm-up", 60)
        settle(flow, place_burst(flow, TEMPLATES, threads, 50), f"{style} kept: templates", 120)
        time.sleep(1.0)  # the templates' last effects (emails, commits) land
    recipes = orderfill.capture(env.redis, okeys.orders_by_time)
    report: dict[str, Any] = {"templates": len(recipes), "levels": []}
    for level in levels:
        kept = int(env.redis.zcard(okeys.orders_by_time))
        row: dict[str, Any] = {"level": level}
        if level > kept:
            row["fill"] = _fill(env, recipes, level - kept, okeys.events, first=not report.get("copies"))
            report.setdefault("copies", row["fill"].pop("compare"))
        row["orders_kept_before"] = int(env.redis.zcard(okeys.orders_by_time))
        row["stream_entries"] = int(env.redis.xlen(okeys.events))
        row["stream_bytes_per_event"] = round(
            int(env.redis.memory_usage(okeys.events, samples=0) or 0) / max(1, row["stream_entries"])
        )
        row["used_memory"] = int(env.info("memory")["used_memory"])
        row["entries"] = _entries(env, okeys)
        with running_flow(env, style, PROCFILE, flush=False) as flow:
            first = row["orders_kept_before"]
            settle(flow, place_burst(flow, 50, 1, first), f"{style} {level:,} kept: warm-up", 60)
            time.sleep(0.5)
            processes = pids(flow)
            before = snapshot(env, processes)
            ids = place_burst(flow, orders, threads, first + 50)
            settle(flow, ids, f"{style} {level:,} kept: burst", max(120.0, orders / 10))
            row["burst"] = per_order(before, snapshot(env, processes), orders)
            row["entries_after_burst"] = _entries(env, okeys)  # the workers' maintenance has run
            time.sleep(0.5)
            row["budget"] = budget_in(flow, style, rate, 10.0)
        report["levels"].append(row)
    return report


def _entries(env: RedisEnv, okeys: Any) -> dict[str, int]:
    """Entries of the shared structures the hot path writes to: they must hold every order kept."""
    from workers.keys import Keys

    redis, keys = env.redis, Keys()
    return {
        okeys.orders_by_time: int(redis.zcard(okeys.orders_by_time)),
        okeys.view_all(1): int(redis.zcard(okeys.view_all(1))),
        okeys.view_status(1, "CONFIRMED"): int(redis.zcard(okeys.view_status(1, "CONFIRMED"))),
        okeys.events: int(redis.xlen(okeys.events)),
        "rq:finished:* (5 queues)": sum(int(redis.zcard(keys.finished(q))) for q in orderflow.SERVICE_QUEUES),
        "keys (DBSIZE)": int(redis.dbsize()),
    }


def _fill(env: RedisEnv, recipes: list[Any], count: int, events: str, first: bool) -> dict[str, Any]:
    """Copies up to the level; the memory they took and how long writing them took."""
    from bench import orderfill

    memory = int(env.info("memory")["used_memory"])
    started = time.monotonic()
    progress = Progress(count, "copies of settled orders")
    try:
        sample = orderfill.fill(env.redis, recipes, count, progress.update, sample=50 if first else 0)
    finally:
        progress.close()
    groups = orderfill.catch_up_groups(env.redis, events)
    seconds = time.monotonic() - started
    taken = int(env.info("memory")["used_memory"]) - memory
    return {
        "copies": count,
        "seconds": round(seconds, 1),
        "memory_per_copy_bytes": round(taken / count),
        "groups_moved": groups,
        "compare": orderfill.compare(env.redis, recipes[:50], sample) if first else None,
    }


# -- pass: latency budget ------------------------------------------------------------------------------
PATH_JOBS = ("inventory.reserve", "payments.charge", "shipping.arrange")  # job types on the path
PATH_EVENTS = ("OrderPlaced", "InventoryReserved", "PaymentCharged", "ShipmentArranged")
"""The events each path job's step answers with (the first: placing), read back from the stream."""


def measure_budget(env: RedisEnv, style: str, rate: float, seconds: float) -> dict[str, Any]:
    """Orders placed at a fixed ``rate``; then, per order, its path from the job records: how long
    each step's job waited in its queue (enqueued -> its handler started) and how long it ran
    until the next step's job was enqueued (the saga's transition, inside the handler) or, for
    the last, until CONFIRMED; choreographed, also each reactor hop: a step's event appended (its
    stream entry's time) -> the next step's job queued (or, after ShipmentArranged, CONFIRMED).
    Medians (p50) of each segment, and of the whole."""

    def during(flow: Flow, _run: Any) -> dict[str, Any]:
        return budget_in(flow, style, rate, seconds)

    result: dict[str, Any] = burst(env, style, 0, 1, f"{style} budget", during)
    return result


def budget_in(flow: Flow, style: str, rate: float, seconds: float) -> dict[str, Any]:
    """The latency budget's placements and read-back, in a running flow (see measure_budget)."""
    from orders.keys import OrderKeys
    from workers.codec import parse_iso, text
    from workers.keys import Keys

    okeys, wkeys, env = OrderKeys(), Keys(), flow.env
    progress = Progress(round(rate * seconds), f"{style} budget, placed at {rate:g}/s")
    processes = pids(flow)
    before = snapshot(env, processes)
    try:
        ids = place_paced(flow, rate, seconds, len(flow.placed), progress)
    finally:
        progress.close()
    settle(flow, ids, f"{style} budget, settling", 120)
    cost = per_order(before, snapshot(env, processes), len(ids))  # at this rate, not in a burst
    appended = _appended(env, okeys.events, set(ids)) if style == "choreographed" else {}
    segments: dict[str, list[float]] = {}
    for order_id in ids:
        job_ids = texts(env.redis.smembers(okeys.order_jobs(order_id)))
        stamps: dict[str, tuple[float, float]] = {}
        for job_id in job_ids:
            fields = ["data", "enqueued_at", "started_at"]
            data, enqueued, started = env.redis.hmget(wkeys.job(job_id), fields)
            if not (data and enqueued and started):
                continue
            kind = json.loads(text(data))[0]
            stamps[kind] = (parse_iso(text(enqueued)).timestamp(), parse_iso(text(started)).timestamp())
        if not all(kind in stamps for kind in PATH_JOBS):
            continue
        placed, confirmed = flow.log.placed_at[order_id], flow.log.confirmed_at[order_id]
        ends = [stamps[PATH_JOBS[1]][0], stamps[PATH_JOBS[2]][0], confirmed]
        parts = {"place -> first job queued": stamps[PATH_JOBS[0]][0] - placed}
        for kind, end in zip(PATH_JOBS, ends, strict=True):
            parts[f"{kind}: waits in its queue"] = stamps[kind][1] - stamps[kind][0]
            parts[f"{kind}: runs to the next step"] = end - stamps[kind][1]
        events = appended.get(order_id, {})
        if all(kind in events for kind in PATH_EVENTS):  # choreographed: the reactors' hops apart
            starts = [stamps[kind][0] for kind in PATH_JOBS] + [confirmed]
            for kind, start in zip(PATH_EVENTS, starts, strict=True):
                parts[f"reactor hop after {kind}"] = start - events[kind]
        parts["total: place -> CONFIRMED"] = confirmed - placed
        for name, value in parts.items():
            segments.setdefault(name, []).append(value * 1000)
    return {
        "rate": rate,
        "orders": len(ids),
        "with_path": len(segments.get("total: place -> CONFIRMED", [])),
        "p50_ms": {name: round(statistics.median(v), 2) for name, v in segments.items()},
        "p99_ms": {name: round(percentile(sorted(v), 99), 2) for name, v in segments.items()},
        "cpu_us_per_order": cost["cpu_us_per_order"],
        "cpu_us_total": cost["cpu_us_total"],
        "commands_per_order": cost["commands_per_order"],
        "commandstats": cost["commandstats"],
    }


def _appended(env: RedisEnv, stream: str, order_ids: set[str]) -> dict[str, dict[str, float]]:
    """When each of these orders' events was appended (its stream entry id's milliseconds, Redis's
    clock, the same host's as the job records'), by order and event type."""
    from workers.codec import text

    found: dict[str, dict[str, float]] = {}
    raw: Any = env.redis.xrange(stream)
    for entry_id, fields in raw:
        order_id, kind = text(fields.get(b"order_id", b"")), text(fields.get(b"type", b""))
        if order_id in order_ids and kind in PATH_EVENTS:
            found.setdefault(order_id, {})[kind] = int(text(entry_id).split("-")[0]) / 1000
    return found


# -- pass: SLOWLOG (every command's time, scripts by name) ----------------------------------------------
def measure_slowlog(env: RedisEnv, style: str, orders: int, threads: int) -> dict[str, Any]:
    """Every top-level command's duration from SLOWLOG (threshold 0): a script call's time by
    script, which commandstats cannot tell apart. Only the burst's last ``SLOWLOG_MAX`` commands
    are kept, so the figures are per call, with the calls per order from MONITOR's pass."""
    shas = script_names()

    def during(flow: Flow, run: Any) -> dict[str, Any]:
        config: dict[str, Any] = dict(env.redis.config_get("slowlog-*"))  # type: ignore[arg-type]
        env.redis.config_set("slowlog-max-len", SLOWLOG_MAX)
        env.redis.slowlog_reset()
        env.redis.config_set("slowlog-log-slower-than", 0)
        try:
            run()
        finally:
            env.redis.config_set("slowlog-log-slower-than", config["slowlog-log-slower-than"])
            entries = env.redis.slowlog_get(SLOWLOG_MAX)
            env.redis.config_set("slowlog-max-len", config["slowlog-max-len"])
        calls: Counter[str] = Counter()
        usec: Counter[str] = Counter()
        for entry in entries:
            command = entry["command"]  # redis-py joins the arguments with spaces
            argv = (command.decode(errors="replace") if isinstance(command, bytes) else str(command)).split()
            name = argv[0].lower() if argv else "?"
            if name == "evalsha" and len(argv) > 1:
                name = shas.get(argv[1], argv[1][:8])
            calls[name] += 1
            usec[name] += int(entry["duration"])
        total = max(1, sum(usec.values()))
        return {
            "commands_logged": len(entries),
            "per_call_us": {k: round(usec[k] / calls[k], 1) for k, _ in usec.most_common()},
            "share_of_logged_us": {k: round(v / total, 3) for k, v in usec.most_common(15)},
        }

    result: dict[str, Any] = burst(env, style, orders, threads, f"{style} burst (SLOWLOG)", during)
    return result


SLOWLOG_MAX = 100_000


# -- pass 3: py-spy --------------------------------------------------------------------------------------
def measure_pyspy(env: RedisEnv, style: str, orders: int, threads: int, rate: int) -> dict[str, Any]:
    pyspy = Path(sys.executable).with_name("py-spy")

    def during(flow: Flow, run: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-pyspy-") as tmp:
            spies = {}
            for name, proc in flow.processes:
                out = Path(tmp) / f"{proc.pid}.txt"
                argv = [str(pyspy), "record", "--pid", str(proc.pid), "--rate", str(rate), "--format", "raw"]
                argv += ["--nonblocking", "--gil", "-o", str(out)]
                spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                spies[name] = (spy, out)
            time.sleep(1.0)  # py-spy attaches
            started = time.monotonic()
            run()
            seconds = time.monotonic() - started
            report = {}
            for name, (spy, out) in spies.items():
                spy.send_signal(signal.SIGINT)
                _, err = spy.communicate(timeout=60)
                if not out.exists():
                    report[name] = {"error": err.decode(errors="replace")[-300:]}
                    continue
                report[name] = summarize(out.read_text(), rate, orders, seconds)
                if KEEP_RAW:
                    KEEP_RAW.mkdir(parents=True, exist_ok=True)
                    (KEEP_RAW / f"{style}-{name}.txt").write_text(out.read_text())
            return report

    result: dict[str, Any] = burst(env, style, orders, threads, f"{style} burst (py-spy)", during)
    return result


def summarize(raw: str, rate: int, orders: int, seconds: float) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> µs of samples per order by own function and by area."""
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        own[_short(leaf)] += n
        areas[_area(frames)] += n
        for marker, what in INCLUSIVE:
            if any(marker in frame for frame in frames):
                inclusive[what] += n
        total += n

    def us(n: int) -> float:
        return round(n / rate / orders * 1e6, 1)

    return {
        "sampled_us_per_order": us(total),
        "seconds_in_window": round(seconds, 2),
        "by_area": {k: us(v) for k, v in areas.most_common()},
        "inclusive": {k: us(v) for k, v in inclusive.most_common()},
        "top_own": {k: us(v) for k, v in own.most_common(12)},
    }


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "/lib/python3", "wt-orders17/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def _area(frames: list[str]) -> str:
    """The area of the innermost frame that belongs to a known one (the leaf first)."""
    for frame in reversed(frames):
        for marker, area in AREAS:
            if marker in frame:
                return area
    return "other"


# -- the command -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orderprofile", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders in each burst (default 1000)")
    parser.add_argument("--threads", type=int, default=4, help="placing threads (default 4, as the bench)")
    parser.add_argument("--saga-style", choices=["orchestrated", "choreographed"], action="append")
    parser.add_argument("--monitor", action="store_true", help="also count round trips under MONITOR")
    parser.add_argument("--slowlog", action="store_true", help="also time each script call (SLOWLOG)")
    parser.add_argument("--py-spy", action="store_true", help="also sample each process with py-spy")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--redis-url", help="use this Redis (FLUSHED) instead of a private server")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--procfile", type=Path, help="another Procfile's layout (default the checkout's)")
    parser.add_argument("--smtp-keep-alive", type=float, help=f"default {orderflow.SMTP_KEEP_ALIVE}")
    parser.add_argument("--growth", type=int, metavar="BURSTS", help="also: bursts on one growing Redis")
    parser.add_argument("--budget", type=float, metavar="RATE", help="also: the latency budget at RATE/s")
    parser.add_argument(
        "--kept", metavar="N,N,...", help="cost per order with N orders kept (copies: bench/orderfill.py)"
    )
    parser.add_argument("--keep-raw", type=Path, help="keep py-spy's raw stacks in this directory")
    args = parser.parse_args(argv)
    global PROCFILE, KEEP_RAW
    PROCFILE, KEEP_RAW = args.procfile, args.keep_raw
    if args.smtp_keep_alive is not None:
        orderflow.SMTP_KEEP_ALIVE = args.smtp_keep_alive
    styles = args.saga_style or ["orchestrated"]
    report: dict[str, Any] = {}
    with redis_env(args.redis_url) as env:
        for style in styles:
            if args.kept:  # a pass of its own: it measures a burst and a budget at each level
                levels = sorted(int(n.replace("_", "")) for n in args.kept.split(","))
                rate = args.budget or 30.0
                report[style] = {"kept": measure_kept(env, style, levels, args.orders, args.threads, rate)}
                continue
            report[style] = {"cpu": measure_cpu(env, style, args.orders, args.threads)}
            if args.monitor:
                report[style]["monitor"] = measure_monitor(env, style, args.orders, args.threads)
            if args.budget:
                report[style]["budget"] = measure_budget(env, style, args.budget, 10.0)
            if args.growth:
                report[style]["growth"] = measure_growth(env, style, args.orders, args.threads, args.growth)
            if args.slowlog:
                report[style]["slowlog"] = measure_slowlog(env, style, args.orders, args.threads)
            if args.py_spy:
                report[style]["py_spy"] = measure_pyspy(env, style, args.orders, args.threads, args.rate)
    print(json.dumps(report, indent=2) if args.json else text_report(report))
    return 0


def text_report(report: dict[str, Any]) -> str:
    out: list[str] = []
    for style, parts in report.items():
        if "kept" in parts:
            out += kept_report(style, parts["kept"])
            continue
        cpu = parts["cpu"]
        out.append(f"== {style}: {cpu['orders']} orders in {cpu['seconds']} s = {cpu['orders_per_second']}/s")
        out.append(f"CPU µs per order (busy {cpu['cpu_busy_of_2_cores']:.0%} of 2 cores):")
        out += [f"  {name:28} {us:8,}" for name, us in cpu["cpu_us_per_order"].items()]
        out.append(f"  {'total':28} {cpu['cpu_us_total']:8,}")
        out.append(
            f"Redis: {cpu['commands_per_order']} commands/order (scripts' included), "
            f"INFO cpu {cpu['redis_info_cpu_us']} µs/order, "
            f"net in {cpu['net_in_bytes']:,} B, out {cpu['net_out_bytes']:,} B per order"
        )
        out.append("  commandstats per order (calls, µs; EVALSHA's µs include its commands'):")
        out += [f"    {k:18} {v['calls']:7} {v['usec']:8}" for k, v in cpu["commandstats"].items()]
        if "monitor" in parts:
            mon = parts["monitor"]
            out.append(f"Round trips per order (MONITOR): {mon['round_trips_per_order']}")
            for who, counts in mon["by_process"].items():
                detail = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "commands")
                out.append(f"  {who:28} {counts['commands']:6}  ({detail})")
            out.append("  script calls per order:")
            out += [f"    {k:50} {v}" for k, v in mon["script_calls"].items()]
            out.append(f"  commands inside scripts per order: {mon['inside_scripts_total']}")
        if "budget" in parts:
            budget = parts["budget"]
            out.append(f"Latency budget at {budget['rate']:g} orders/s ({budget['with_path']} orders), ms:")
            out.append(f"  {'segment':44} {'p50':>8} {'p99':>8}")
            for name, p50 in budget["p50_ms"].items():
                out.append(f"  {name:44} {p50:8} {budget['p99_ms'][name]:8}")
            out.append(
                f"  at this rate, per order: CPU {budget['cpu_us_total']:,} µs ("
                + ", ".join(f"{k} {v:,}" for k, v in budget["cpu_us_per_order"].items())
                + f"), Redis commands {budget['commands_per_order']}"
            )
        if "growth" in parts:
            out.append("Cost growth (one burst after another on the same Redis):")
            out.append("  kept before  orders/s  CPU µs/order  Redis µs/order  cmds/order  B/order  B/event")
            for row in parts["growth"]:
                out.append(
                    f"  {row['orders_kept_before']:11,}  {row['orders_per_second']:8}"
                    f"  {row['cpu_us_total']:12,}  {row['redis_info_cpu_us']:14,}"
                    f"  {row['commands_per_order']:10}  {row['memory_per_order_bytes']:7,}"
                    f"  {row['stream_bytes_per_event']:7,}"
                )
        if "slowlog" in parts:
            log = parts["slowlog"]
            out.append(f"SLOWLOG ({log['commands_logged']} commands): µs per call, share of logged time")
            for k, share in log["share_of_logged_us"].items():
                out.append(f"    {k:24} {log['per_call_us'][k]:8}  {share:.1%}")
        if "py_spy" in parts:
            for who, prof in parts["py_spy"].items():
                if "error" in prof:
                    out.append(f"py-spy {who}: {prof['error']}")
                    continue
                out.append(f"py-spy {who}: {prof['sampled_us_per_order']} µs sampled per order")
                out.append("  by area: " + ", ".join(f"{k} {v}" for k, v in prof["by_area"].items()))
                out.append("  inclusive: " + ", ".join(f"{k} {v}" for k, v in prof["inclusive"].items()))
                out += [f"    {v:8} {k}" for k, v in prof["top_own"].items()]
        out.append("")
    return "\n".join(out)


def kept_report(style: str, kept: dict[str, Any]) -> list[str]:
    out = [
        f"== {style}: cost per order with N orders kept. Beyond the first {kept['templates']} real orders,"
        " the orders kept are COPIES of them (bench/orderfill.py); the measured orders are real.",
        "  kept before  orders/s  CPU µs/order  Redis µs/order  cmds/order  p50 ms  p99 ms"
        "  stream entries  B/event  fill s  B/copy",
    ]
    for row in kept["levels"]:
        cost, budget, fill = row["burst"], row["budget"], row.get("fill", {})
        total = "total: place -> CONFIRMED"
        out.append(
            f"  {row['orders_kept_before']:11,}  {cost['orders_per_second']:8}  {cost['cpu_us_total']:12,}"
            f"  {cost['redis_info_cpu_us']:14,}  {cost['commands_per_order']:10}"
            f"  {budget['p50_ms'].get(total, 0):6}  {budget['p99_ms'].get(total, 0):6}"
            f"  {row['stream_entries']:14,}  {row['stream_bytes_per_event']:7}"
            f"  {fill.get('seconds', '-'):>6}  {fill.get('memory_per_copy_bytes', '-'):>6}"
        )
    out.append("  entries of the shared structures at each level:")
    for row in kept["levels"]:
        entries = ", ".join(f"{k} {v:,}" for k, v in row["entries"].items())
        out.append(f"    {row['orders_kept_before']:11,}: {entries}")
        after = ", ".join(f"{k} {v:,}" for k, v in row["entries_after_burst"].items())
        out.append(f"    {'after burst':>11}: {after}")
    if kept.get("copies"):
        out.append("  copies against the originals by key pattern (keys, mean MEMORY USAGE, type/encoding):")
        for pattern, row in sorted(kept["copies"].items()):
            cells = [
                f"{side} {c['keys']} x {c['mean_bytes']:,} B {','.join(c['kinds'])}"
                for side, c in sorted(row.items())
            ]
            out.append(f"    {pattern:52} " + " | ".join(cells))
    out.append("")
    return out


if __name__ == "__main__":
    sys.exit(main())
