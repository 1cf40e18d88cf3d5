"""The table, the targets of the speed issues, and the machine-readable results.

Medians over rounds with min and max, and the ratio against rq's SimpleWorker from the same
invocation. Targets are marked met or not beside chumon's default and best rows, and so is
whether that row leads every peer (rq, bullmq, dramatiq: their best configuration's median,
same invocation). The harness reports, it never fails a run on timing.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import METRICS, Results

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SYSTEM_ORDER = ("rq", "chumon", "bullmq", "dramatiq")


@dataclass(frozen=True)
class Target:
    text: str
    floor: float | None = None
    ceiling: float | None = None
    times_rq: float | None = None  # at least this many times rq's median
    at_most_rq: bool = False

    def met(self, value: float, rq: float | None) -> bool | None:
        """None when the comparison needs rq's figure and there is none."""
        if (self.times_rq is not None or self.at_most_rq) and rq is None:
            return None
        checks = [
            self.floor is None or value >= self.floor,
            self.ceiling is None or value <= self.ceiling,
            self.times_rq is None or (rq is not None and value >= self.times_rq * rq),
            not self.at_most_rq or (rq is not None and value <= rq),
        ]
        return all(checks)


TARGETS = {
    "noop": Target(">= 2,000/s and >= 12x rq", floor=2000, times_rq=12),
    "write": Target(">= 1,200/s and >= 8x rq", floor=1200, times_rq=8),
    "enqueue_single": Target(">= 2,500/s", floor=2500),
    "enqueue_bulk": Target(">= 15,000/s", floor=15000),
    "client_commands": Target("<= 2 per job", ceiling=2),
    "all_commands": Target("<= 7 per job", ceiling=7),
    "redis_cpu": Target("<= 30 us", ceiling=30),
    "memory": Target("<= rq's", at_most_rq=True),
    "orders_sustained": Target(">= 600/s", floor=600),
    "latency_p99": Target("<= 50 ms", ceiling=50),
}
EVERY_ROW = frozenset({"orders_sustained", "latency_p99"})
"""Targets checked on every chumon row (each saga style must meet them), not only the best."""


@dataclass
class Row:
    metric: str
    system: str
    unit: str
    values: list[float]
    median: float
    min: float
    max: float
    vs_rq: float | None
    best: bool
    target: str
    met: bool | None
    behind: str | None = None  # chumon rows checked: "" when it leads every peer, else the peer ahead


def _system_key(label: str) -> tuple[int, int, str]:
    rank = next((i for i, name in enumerate(SYSTEM_ORDER) if label.startswith(name)), len(SYSTEM_ORDER))
    match = re.search(r"c=(\d+)", label)
    return rank, int(match.group(1)) if match else 0, label


def _leading_peer(results: Results, metric: str, systems: list[str]) -> tuple[str, float] | None:
    """The peer (any system but chumon) with the best median, and that median."""
    better = max if METRICS[metric].higher_is_better else min
    peers = [(s, results.median(metric, s)) for s in systems if not s.startswith("chumon")]
    known = [(s, m) for s, m in peers if m is not None]
    return better(known, key=lambda pair: pair[1]) if known else None


def _behind(metric: str, value: float, leader: tuple[str, float] | None) -> str | None:
    """ "" when ``value`` beats the leading peer, its name when not, None when there is no peer."""
    if leader is None:
        return None
    ahead = value > leader[1] if METRICS[metric].higher_is_better else value < leader[1]
    return "" if ahead else leader[0]


def rows(results: Results) -> list[Row]:
    out: list[Row] = []
    for metric, spec in METRICS.items():
        systems = sorted(results.systems(metric), key=_system_key)
        rq = next((results.median(metric, s) for s in systems if s.startswith("rq")), None)
        chumon = [s for s in systems if s.startswith("chumon")]
        medians = {s: results.median(metric, s) or 0.0 for s in chumon}
        pick = max if spec.higher_is_better else min
        best = pick(chumon, key=lambda s: medians[s]) if len(chumon) > 1 else None
        leader = _leading_peer(results, metric, systems)
        for system in systems:
            values = results.values[(metric, system)]
            median = statistics.median(values)
            target = TARGETS.get(metric) if system.startswith("chumon") else None
            shown = system.startswith("chumon") and (
                len(chumon) == 1 or system == best or "default" in system or metric in EVERY_ROW
            )
            checked = target is not None and shown
            out.append(
                Row(
                    metric=metric,
                    system=system,
                    unit=spec.unit,
                    values=values,
                    median=median,
                    min=min(values),
                    max=max(values),
                    vs_rq=median / rq if rq and not system.startswith("rq") else None,
                    best=system == best,
                    target=target.text if target and checked else "",
                    met=target.met(median, rq) if target and checked else None,
                    behind=_behind(metric, median, leader) if shown else None,
                )
            )
    return out


def number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _lead(behind: str | None) -> str:
    if behind is None:
        return ""
    return "leads" if behind == "" else f"BEHIND {behind}"


def table(results: Results) -> str:
    header = ["measure", "unit", "system", "median", "min", "max", "vs rq", "target", "met?", "vs peers"]
    lines: list[list[str]] = []
    shown = ""
    blank = [""] * 6
    every = rows(results)
    for metric in METRICS:
        for row in (r for r in every if r.metric == metric):
            title = METRICS[row.metric].title if row.metric != shown else ""
            shown = row.metric
            lines.append(
                [
                    title,
                    row.unit if title else "",
                    row.system + (" [best]" if row.best else ""),
                    number(row.median),
                    number(row.min),
                    number(row.max),
                    f"{row.vs_rq:.3g}x" if row.vs_rq is not None else "",
                    row.target,
                    {True: "met", False: "NOT MET", None: ""}[row.met] if row.target else "",
                    _lead(row.behind),
                ]
            )
        for (missing, system), _reason in results.missing.items():
            if missing == metric and shown == metric:
                lines.append(["", "", system, "n/a (1)", *blank])
    for system, reason in results.unavailable.items():
        lines.append(["", "", system, "unavailable", *blank])
        lines.append(["", "", f"  ({reason})", "", *blank])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    numeric = {3, 4, 5, 6}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    notes = [
        f"(1) {system}, {METRICS[metric].title}: {why}" for (metric, system), why in results.missing.items()
    ]
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), *notes])


def summary(results: Results) -> str:
    parts = [table(results), ""]
    if results.failures:
        parts.append(f"FAILED: {len(results.failures)} correctness check(s):")
        parts += [f"  - {failure}" for failure in results.failures]
    else:
        parts.append("All correctness checks passed (exact counts, no failed, retried or duplicate jobs).")
    return "\n".join(parts)


def as_json(results: Results) -> dict[str, Any]:
    return {
        "ok": results.ok,
        "failures": results.failures,
        "info": results.info,
        "unavailable": results.unavailable,
        "missing": [{"metric": m, "system": s, "why": why} for (m, s), why in results.missing.items()],
        "rows": [asdict(row) for row in rows(results)],
        "details": results.details,
    }


def write(results: Results, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(as_json(results), indent=2, default=str) + "\n")
    return path
