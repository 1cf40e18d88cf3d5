"""The job runtime on its own: ``make demo-runtime``.

Starts two ``chumon worker`` processes on the ``demo`` queue, enqueues jobs that succeed,
jobs that fail twice and then succeed on schedule, jobs that are dead-lettered, and
duplicates that are skipped, shows live progress, prints what happened, and stops the
workers. It reads and writes only its own jobs, so it is safe against a shared Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from chumon.app import redis_client
from chumon.logs import mask_url
from chumon.progress import Progress
from chumon.settings import load
from jobs import demo
from producer import Producer
from workers import EnqueueOptions
from workers.cli import table
from workers.codec import parse_iso
from workers.jobview import JobInfo

TIMEOUT = 90.0


def start_workers(count: int) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "chumon", "--log-level", "WARNING", "worker", "--app", "jobs:registry"]
    return [
        subprocess.Popen(
            [*command, "--queues", demo.QUEUE, "--concurrency", "4", "--name", f"demo-{i}-{os.getpid()}"]
        )
        for i in range(1, count + 1)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def enqueue_all(producer: Producer) -> dict[str, list[str]]:
    run = f"{time.time():.0f}"
    jobs: dict[str, list[str]] = {}
    jobs["work"] = producer.enqueue_many(demo.work, [{"item": i} for i in range(12)])
    jobs["flaky"] = producer.enqueue_many(demo.flaky, [{"item": i, "failures": 2} for i in range(3)])
    jobs["doomed"] = [
        producer.enqueue(demo.doomed, {"item": 1, "permanent": True}),
        producer.enqueue(demo.doomed, {"item": 2}),
    ]
    deposits = [
        {"account": f"alice-{run}", "amount": 100, "reference": f"{run}-r1"},
        {"account": f"bob-{run}", "amount": 50, "reference": f"{run}-r2"},
        {"account": f"alice-{run}", "amount": 100, "reference": f"{run}-r1"},  # the same deposit, again
    ]
    jobs["deposit"] = [producer.enqueue(demo.deposit, d) for d in deposits]
    key = EnqueueOptions(idempotency_key=f"{run}-double-submit")
    first = producer.enqueue(demo.work, {"item": 99}, options=key)
    again = producer.enqueue(demo.work, {"item": 99}, options=key)
    jobs["double submit"] = [first] if first == again else [first, again]
    return jobs


def settled(info: JobInfo | None) -> bool:
    return info is not None and info.status in ("finished", "failed")


def watch(producer: Producer, ids: list[str], progress: Progress) -> dict[str, JobInfo]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        infos = {job_id: producer.get_job(job_id) for job_id in ids}
        states = Counter(i.status if i else "missing" for i in infos.values())
        done = states["finished"] + states["failed"]
        progress.update(
            done,
            f"{states['finished']} finished, {states['scheduled']} waiting to retry, "
            f"{states['started']} running, {states['failed']} dead-lettered",
        )
        if done == len(ids) or time.monotonic() > deadline:
            progress.close()
            return {k: v for k, v in infos.items() if v is not None}
        time.sleep(0.2)


def summary(jobs: dict[str, list[str]], infos: dict[str, JobInfo], producer: Producer) -> dict[str, Any]:
    rows = []
    for group, ids in jobs.items():
        group_infos = [infos[i] for i in ids if i in infos]
        rows.append(
            {
                "group": group,
                "jobs": len(ids),
                "finished": sum(i.status == "finished" for i in group_infos),
                "dead_lettered": sum(i.status == "failed" for i in group_infos),
                "attempts": sum(i.attempt for i in group_infos),
            }
        )
    retries = []
    for job_id in jobs["flaky"]:
        info = infos[job_id]
        delays = [
            round(parse_iso(b["started_at"]).timestamp() - parse_iso(a["ended_at"]).timestamp(), 2)
            for a, b in zip(info.failures, [*info.failures[1:], {"started_at": info.started_at}], strict=True)
        ]
        retries.append(
            {"job": job_id, "attempts": info.attempt, "waits_before_retries_s": delays, "result": info.result}
        )
    dead = [
        {"job": i.id, "type": i.job_type, "reason": i.dead_letter_reason, "last_error": i.last_error}
        for ids in jobs.values()
        for i in (infos[j] for j in ids if j in infos)
        if i.status == "failed"
    ]
    accounts = sorted({r["account"] for j in jobs["deposit"] if j in infos and (r := infos[j].result)})
    balances = dict(zip(accounts, producer.redis.hmget("demo:balances", accounts), strict=True))
    deposit_results = [infos[j].result for j in jobs["deposit"] if j in infos]
    return {"groups": rows, "retries": retries, "dead_letters": dead, "deposit_results": deposit_results,
            "balances": {a: int(v) if v else 0 for a, v in balances.items()}}  # fmt: skip


def render(data: dict[str, Any], elapsed: float) -> str:
    out = [f"\nAll {sum(g['jobs'] for g in data['groups'])} jobs settled in {elapsed:.1f} s.\n"]
    out.append(
        table(
            [
                (g["group"], g["jobs"], g["finished"], g["dead_lettered"], g["attempts"])
                for g in data["groups"]
            ],
            ["jobs", "count", "finished", "dead-lettered", "attempts used"],
        )
    )
    out.append("\nRetries on schedule (demo.flaky fails twice, backoff base 1 s, factor 2, jitter 20%):")
    for r in data["retries"]:
        out.append(f"  {r['job'][:8]}  waited {r['waits_before_retries_s']} s  -> {r['result']}")
    out.append("\nDead-letter queue demo.dlq (chumon dlq list --queue demo):")
    for d in data["dead_letters"]:
        out.append(f"  {d['job'][:8]}  {d['type']}: {d['reason']} ({d['last_error']})")
    balances = ", ".join(f"{a.split('-')[0]} {v}" for a, v in data["balances"].items())
    out.append(
        "\nDuplicates: deposit r1 (alice, 100) was submitted twice and applied once: balances "
        f"{balances}; the double submit with one idempotency key made one job."
    )
    out.append(
        "\nWith REDIS_URL pointing at a Redis of yours the jobs stay there: try `.venv/bin/chumon dlq list`,"
        "\n`.venv/bin/chumon job show <id>` and"
        " `.venv/bin/rq info --serializer rq.serializers.JSONSerializer`."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    settings = load()
    producer = Producer(redis_client(settings.redis_url, settings.redis), settings, demo.registry)
    where = mask_url(settings.redis_url)
    print(f"Redis at {where}; starting 2 worker processes on queue '{demo.QUEUE}'", file=sys.stderr)
    started = time.monotonic()
    workers = start_workers(2)
    try:
        jobs = enqueue_all(producer)
        ids = [i for group in jobs.values() for i in group]
        infos = watch(producer, ids, Progress(len(ids), "jobs settled", stream=sys.stderr))
    finally:
        stop_workers(workers)
    data = summary(jobs, infos, producer)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data, time.monotonic() - started))
    return 0 if len(infos) == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main())
