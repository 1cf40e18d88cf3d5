"""Where chumon's worker spends its time per job: ``python -m bench.profile``.

Queues N no-op jobs, then runs one burst worker process (bench.child) under py-spy, sampling
only the thread that holds the GIL (``--gil``): the worker is one Python process, so the GIL
is its ceiling, and time spent waiting for Redis does not hold it. Import-time samples are
dropped. Prints the functions by own time and by inclusive time, and by area, as
microseconds of GIL time per job.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.redisenv import RedisEnv, redis_env
from bench.systems import ChumonAdapter

WORKER_FRAMES = ("Worker.run (", "Thread.run (")
WRAPPER_FRAMES = ("<frozen runpy>", "bench/child.py", "threading.py")
AREAS = (
    ("redis/", "redis-py: commands, connection, replies"),
    ("json/", "json encode/decode"),
    ("pydantic", "pydantic validation and dumps"),
    ("logging/", "logging"),
    ("chumon/logs.py", "logging"),
    ("prometheus_client", "metrics (prometheus-client)"),
    ("threading.py", "thread handoff (threading)"),
    ("queue.py", "thread handoff (queue)"),
    ("bench/jobs.py", "the job's own code"),
    ("workers/", "chumon runtime code"),
)


@dataclass
class Profile:
    rate: int
    jobs: int
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    areas: Counter[str] = field(default_factory=Counter)
    threads: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    redis_cpu: float = 0.0  # seconds of CPU the Redis server used meanwhile

    def us_per_job(self, samples: int) -> float:
        return samples / self.rate / self.jobs * 1e6


def function(frame: str) -> str:
    """``Worker._step (workers/worker.py:204)`` -> ``Worker._step (workers/worker.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def area(frame: str) -> str:
    return next((label for marker, label in AREAS if marker in frame), "other (stdlib, interpreter)")


def parse(raw: str, rate: int, jobs: int) -> Profile:
    profile = Profile(rate, jobs)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not any(marker in stack for marker in WORKER_FRAMES):
            continue  # start-up: imports, set-up
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2] or frames[0]
        leaf = function(frames[-1])
        profile.samples += count
        profile.threads[thread] += count
        profile.own[leaf] += count
        profile.areas[area(frames[-1])] += count
        for name in {function(frame) for frame in frames[1:]}:
            if not any(wrapper in name for wrapper in WRAPPER_FRAMES):
                profile.inclusive[name] += count
    return profile


def render(profile: Profile, top: int) -> str:
    lines = [
        f"{profile.samples} GIL samples at {profile.rate} Hz over {profile.jobs} jobs: "
        f"{profile.us_per_job(profile.samples):.1f} us of GIL time per job",
        f"the Redis server meanwhile: {profile.redis_cpu / profile.jobs * 1e6:.1f} us of CPU per job",
    ]
    for title, counter, n in (
        ("by area (leaf frame)", profile.areas, len(profile.areas)),
        ("by thread", profile.threads, len(profile.threads)),
        ("own time", profile.own, top),
        ("inclusive time", profile.inclusive, top),
    ):
        lines += ["", f"{title}:"]
        for name, count in counter.most_common(n):
            share = 100 * count / max(profile.samples, 1)
            lines.append(f"  {share:5.1f}%  {profile.us_per_job(count):7.2f} us/job  {name}")
    return "\n".join(lines)


def redis_cpu(env: RedisEnv) -> float:
    info = env.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def record(url: str, env: dict[str, str], jobs: int, concurrency: int | None, rate: int, out: Path) -> float:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("bench.profile needs py-spy: pip install py-spy")
    child = [sys.executable, "-m", "bench.child", "chumon", "noop", "--redis-url", url, "--expect", str(jobs)]
    if concurrency:
        child += ["--concurrency", str(concurrency)]
    command = [spy, "record", "--format", "raw", "--gil", "--threads", "--rate", str(rate), "-o", str(out)]
    started = time.monotonic()
    subprocess.run([*command, "--", *child], env=env, check=True, capture_output=True)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, help="worker concurrency (default: the runtime's)")
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the worker process"
    )
    parser.add_argument(
        "--redis-url", help="use this Redis (its database is FLUSHED) instead of a private one"
    )
    args = parser.parse_args(argv)
    with redis_env(args.redis_url) as env, tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        env.flush()
        ChumonAdapter(env.redis, env.url).add_bulk("noop", range(args.jobs), 1000)
        raw = Path(tmp) / "profile.txt"
        cpu_before = redis_cpu(env)
        settings = dict(item.split("=", 1) for item in args.env)
        seconds = record(env.url, env.child_env(**settings), args.jobs, args.concurrency, args.rate, raw)
        profile = parse(raw.read_text(), args.rate, args.jobs)
        profile.redis_cpu = redis_cpu(env) - cpu_before
        env.flush()
    print(f"worker process under py-spy: {seconds:.1f} s for {args.jobs} no-op jobs (sampling slows it)")
    print(render(profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
