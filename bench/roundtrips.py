"""Redis round trips per job, from Redis's own records.

Does INFO count the commands a Lua script runs? ``probe`` answers that on the server in use:
it snapshots INFO, runs one EVAL whose script calls three commands, and snapshots again. On
Redis 7.0 both ``total_commands_processed`` and ``commandstats`` count the script's commands
(the delta is 5, not 2), so neither can tell client commands from script commands.

MONITOR can: it prints a client's commands as ``[db addr]`` and a script's as ``[db lua]``.
``count_commands`` drains jobs with ``redis-cli monitor`` writing to a file; the poller's two
INFO snapshots (at 20% and 80% of the jobs) are the window's markers in that file. In the
window it counts the worker's client commands by name (a script call once, the commands in
it not; pipelined and MULTI/EXEC commands each, so the figure is an upper bound on round
trips), and cross-checks the total against INFO commandstats over the same window.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.drain import Case, Child, Poller, RunFailed, drain_timeout, verify
from bench.redisenv import RedisEnv, redis_cli
from bench.systems import Adapter
from chumon.progress import Progress

PROBE_SCRIPT = (
    "redis.call('SET', KEYS[1], '1') redis.call('SET', KEYS[2], '1') redis.call('INCR', KEYS[3]) return 1"
)
PROBE_KEYS = ("bench:probe:a", "bench:probe:b", "bench:probe:c")
END_MARK = "bench:monitor:end"


class Monitor:
    """``redis-cli monitor`` writing to a file (C, line-buffered: it keeps up with the server)."""

    def __init__(self, cli: str, url: str, path: Path) -> None:
        self.path = path
        self.file = path.open("w")
        self.proc = subprocess.Popen([cli, "-u", url, "monitor"], stdout=self.file, stderr=subprocess.DEVNULL)
        self.wait_for("OK")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self._tail():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RunFailed(f"MONITOR: {text!r} never appeared in its output")
            time.sleep(0.02)

    def _tail(self, size: int = 4096) -> str:
        with self.path.open("rb") as f:
            f.seek(max(0, self.path.stat().st_size - size))
            return f.read().decode(errors="replace")

    def lines(self) -> Iterator[str]:
        with self.path.open(errors="replace") as f:
            yield from f

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.file.close()


def parse(line: str) -> tuple[str, str] | None:
    """``1795.6 [0 127.0.0.1:34304] "info" "x"`` -> ("127.0.0.1:34304", "info"); ``lua`` for scripts."""
    start = line.find("[")
    end = line.find("]", start)
    quote = line.find('"', end)
    if start < 0 or end < 0 or quote < 0:
        return None
    source = line[start + 1 : end].partition(" ")[2]
    return source, line[quote + 1 : line.find('"', quote + 1)].lower()


def probe(env: RedisEnv) -> dict[str, Any]:
    """Whether INFO's counters and MONITOR see the commands inside a script (see the module doc)."""
    env.flush()

    def snapshot() -> dict[str, Any]:
        # two INFO calls: several sections in one INFO is Redis 7 only, and chumon serves 6.2
        info: dict[str, Any] = {**env.redis.info("stats"), **env.redis.info("commandstats")}
        return info

    before = snapshot()
    env.redis.eval(PROBE_SCRIPT, len(PROBE_KEYS), *PROBE_KEYS)
    after = snapshot()
    total = int(after["total_commands_processed"]) - int(before["total_commands_processed"])
    sets = int(after["cmdstat_set"]["calls"]) - int(before.get("cmdstat_set", {}).get("calls", 0))
    return {
        "script": "one EVAL calling SET, SET, INCR",
        # between the two readings: INFO stats, INFO commandstats and the EVAL (3), or 6 with the
        # script's own commands
        "total_commands_processed_delta": total,
        "total_commands_processed_counts_script_commands": total == 6,
        "commandstats_set_delta": sets,
        "commandstats_counts_script_commands": sets == 2,
        "monitor_marks_script_commands": _monitor_marks_lua(env),
    }


def _monitor_marks_lua(env: RedisEnv) -> bool | None:
    cli = redis_cli()
    if cli is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        monitor = Monitor(cli, env.url, Path(tmp) / "probe.log")
        try:
            env.redis.eval(PROBE_SCRIPT, len(PROBE_KEYS), *PROBE_KEYS)
            env.redis.echo(END_MARK)
            monitor.wait_for(END_MARK)
        finally:
            monitor.stop()
        seen = [parsed for line in monitor.lines() if (parsed := parse(line))]
    return ("lua", "set") in seen and ("lua", "incr") in seen


@dataclass
class CommandCount:
    """What one worker sent Redis in the steady-state window, from MONITOR."""

    case: Case
    jobs: int
    client: Counter[str] = field(default_factory=Counter)
    scripts: Counter[str] = field(default_factory=Counter)
    commandstats_total: int = 0

    def client_per_job(self) -> float:
        return sum(self.client.values()) / self.jobs

    def all_per_job(self) -> float:
        return (sum(self.client.values()) + sum(self.scripts.values())) / self.jobs

    @property
    def complete(self) -> bool:
        """MONITOR saw exactly what INFO commandstats counted in the same window."""
        return self.commandstats_total == sum(self.client.values()) + sum(self.scripts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.case.label,
            "jobs_in_window": self.jobs,
            "client_commands_per_job": round(self.client_per_job(), 3),
            "all_commands_per_job": round(self.all_per_job(), 3),
            "client_commands": {k: round(v / self.jobs, 3) for k, v in sorted(self.client.items())},
            "script_commands": {k: round(v / self.jobs, 3) for k, v in sorted(self.scripts.items())},
            "monitor_matches_commandstats": self.complete,
        }


def count_commands(
    env: RedisEnv, adapter: Adapter, case: Case, jobs: int, batch: int, label: str
) -> CommandCount:
    """Drain ``jobs`` jobs under MONITOR and count the worker's commands in the window."""
    cli = redis_cli()
    if cli is None:
        raise RunFailed("no redis-cli to run MONITOR with")
    env.flush()
    adapter.add_bulk(case.workload, range(jobs), batch)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        monitor = Monitor(cli, env.url, Path(tmp) / "monitor.log")
        poller = Poller(env, adapter, jobs)
        child = Child(case, env, jobs, drain_timeout(jobs))
        progress = Progress(jobs, label)
        try:
            poller.wait(child, drain_timeout(jobs), progress)
            summary = child.finish()
            poller.client.echo(END_MARK)
            monitor.wait_for(END_MARK, timeout=120)
        finally:
            progress.close()
            child.close()
            poller.close()
            monitor.stop()
        verify(env, adapter, case, jobs, summary)
        window = poller.window()
        if window is None:
            raise RunFailed(f"{case.label}: no steady-state window (too few jobs?)")
        count = CommandCount(case, window.jobs, commandstats_total=sum(window.calls.values()))
        _tally(monitor.lines(), poller.address, count)
    return count


def _tally(lines: Iterator[str], poller: str, count: CommandCount) -> None:
    """Count the lines between the poller's two INFO commands, the poller's own excluded."""
    markers = 0
    for line in lines:
        parsed = parse(line)
        if parsed is None:
            continue
        source, command = parsed
        if source == poller:
            markers += command == "info"
            if markers == 2:
                return
            continue
        if markers == 1:
            (count.scripts if source == "lua" else count.client)[command] += 1
    raise RunFailed("MONITOR output lacks the window's markers")
