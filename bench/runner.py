"""The invocation: every workload, round after round, systems in a rotating order.

Interleaving: each round runs every workload on every system before the next round starts,
and the order of the systems rotates from round to round, so a slow drift of the machine
(thermal, other load) spreads over all systems instead of landing on one.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

from bench.drain import Case, RunFailed, run_drain
from bench.enqueue import run_enqueues
from bench.latency import RQ_QUEUE, run_latencies
from bench.machine import describe
from bench.memory import run_memory
from bench.orderflow import run_orders
from bench.plan import Plan
from bench.redisenv import RedisEnv, redis_cli
from bench.results import Results
from bench.roundtrips import count_commands, probe
from bench.systems import Adapter, RqAdapter


@dataclass
class Bench:
    plan: Plan
    env: RedisEnv
    adapters: dict[str, Adapter]
    results: Results
    round: int = 0

    @property
    def systems(self) -> list[str]:
        """The available systems, rotated by the round number."""
        names = list(self.adapters)
        shift = self.round % len(names)
        return names[shift:] + names[:shift]

    def tag(self, what: str) -> str:
        return f"round {self.round + 1}/{self.plan.rounds} {what}"

    def attempt(self, what: str, run: Callable[[], None]) -> None:
        """Run one measurement; a failed check is recorded and the invocation goes on."""
        try:
            run()
        except RunFailed as exc:
            self.results.fail(f"{self.tag(what)}: {exc}")
        except Exception as exc:  # a crashed run must not hide the others' results
            self.results.fail(f"{self.tag(what)}: {type(exc).__name__}: {exc}")
            traceback.print_exc()


def cases(bench: Bench, workload: str) -> list[Case]:
    plan = bench.plan
    chumon = plan.noop_concurrency if workload == "noop" else plan.write_concurrency
    by_system = {
        "rq": [Case("rq", workload)],
        # beside the no-op drains: the same no-op returning a value (its result is written)
        "chumon": [Case("chumon", workload, c) for c in chumon]
        + ([Case("chumon", "value")] if workload == "noop" else []),
        "bullmq": [Case("bullmq", workload, c) for c in plan.bullmq_concurrency],
        "dramatiq": [Case("dramatiq", workload, plan.dramatiq_threads)],
    }
    return [case for system in bench.systems for case in by_system[system]]


def drains(bench: Bench, workload: str) -> None:
    for case in cases(bench, workload):

        def run(case: Case = case) -> None:
            adapter = bench.adapters[case.system]
            result = run_drain(
                bench.env, adapter, case, bench.plan.jobs, bench.plan.batch, bench.tag(case.label)
            )
            bench.results.add(workload, case.label, result.rate)
            if workload == "noop" and case.workload == "noop":
                bench.results.add("redis_cpu", case.label, result.redis_cpu_us_per_job)
            window = result.window
            bench.results.note(
                kind="drain", round=bench.round + 1, workload=workload, system=case.label,
                jobs=result.jobs, seconds=round(result.seconds, 3), rate=round(result.rate, 1),
                redis_cpu_us_per_job=round(result.redis_cpu_us_per_job, 2),
                commands_per_job=window.per_job() if window else None,
            )  # fmt: skip

        bench.attempt(f"{workload} {case.label}", run)


def enqueues(bench: Bench) -> None:
    """All systems in one run, taking turns slice by slice (bench/enqueue.py)."""
    plan = bench.plan

    def run() -> None:
        adapters = [bench.adapters[system] for system in bench.systems]
        single, bulk = run_enqueues(bench.env, adapters, plan.enqueue_single, plan.enqueue_bulk, plan.batch)
        for adapter in adapters:
            bench.results.add("enqueue_single", adapter.system, single[adapter.system])
            if adapter.system in bulk:
                bench.results.add("enqueue_bulk", adapter.system, bulk[adapter.system])
            else:
                bench.results.missing[("enqueue_bulk", adapter.system)] = adapter.no_bulk or "no bulk path"

    bench.attempt("enqueue", run)


def latencies(bench: Bench) -> None:
    """Single jobs through idle workers, all serving at once (bench/latency.py): rq, chumon at
    its default concurrency, bullmq c=1, dramatiq with its threads."""
    plan = bench.plan
    concurrency = {"rq": None, "chumon": None, "bullmq": 1, "dramatiq": plan.dramatiq_threads}

    def run() -> None:
        runs: list[tuple[Adapter, Case]] = []
        for system in bench.systems:
            adapter = bench.adapters[system]
            if system == "rq":  # rq on a queue of its own: chumon serves rq's "bench" queue
                adapter = RqAdapter(bench.env.redis, RQ_QUEUE)
            runs.append((adapter, Case(system, "noop", concurrency[system])))
        tag = bench.tag("single-job latency")
        for measured in run_latencies(bench.env, runs, plan.latency_jobs, plan.latency_gap, tag):
            bench.results.add("latency_single_p50", measured.case.label, measured.percentile(50))
            bench.results.add("latency_single_p99", measured.case.label, measured.percentile(99))
            bench.results.note(kind="latency", round=bench.round + 1, **measured.as_dict())

    bench.attempt("single-job latency", run)


def memory(bench: Bench) -> None:
    for system in bench.systems:

        def run(system: str = system) -> None:
            per_job = run_memory(bench.env, bench.adapters[system], bench.plan.memory_jobs, bench.plan.batch)
            bench.results.add("memory", system, per_job)

        bench.attempt(f"memory {system}", run)


def roundtrips(bench: Bench) -> None:
    if redis_cli() is None:
        bench.results.unavailable["MONITOR count"] = "no redis-cli beside redis-server or on PATH"
        return
    concurrency = {
        "rq": None, "chumon": None, "bullmq": max(bench.plan.bullmq_concurrency),
        "dramatiq": bench.plan.dramatiq_threads,
    }  # fmt: skip
    for system in bench.systems:
        case = Case(system, "noop", concurrency[system])

        def run(case: Case = case) -> None:
            plan = bench.plan
            count = count_commands(
                bench.env, bench.adapters[case.system], case, plan.roundtrip_jobs, plan.batch,
                bench.tag(f"commands per job, {case.label}"),
            )  # fmt: skip
            bench.results.add("client_commands", case.label, count.client_per_job())
            bench.results.add("all_commands", case.label, count.all_per_job())
            bench.results.note(kind="commands", round=bench.round + 1, **count.as_dict())

        bench.attempt(f"commands per job {case.label}", run)


def orders(bench: Bench) -> None:
    """The order flow once per saga style, each a system row of its own ("chumon orchestrated")."""
    for style in bench.plan.saga_styles:
        system = f"chumon {style}"

        def run(style: str = style, system: str = system) -> None:
            flow = run_orders(bench.env, bench.plan, bench.tag(f"orders {style}"), style)
            bench.results.add("orders_sustained", system, flow["sustained_rate"])
            bench.results.add("latency_p50", system, flow["latency_p50_ms"])
            bench.results.add("latency_p99", system, flow["latency_p99_ms"])
            bench.results.add("jobs_per_order", system, flow["jobs_per_order"])
            bench.results.add("events_per_order", system, flow["events_per_order"])
            bench.results.note(kind="orders", round=bench.round + 1, **flow)

        bench.attempt(f"order flow {style}", run)


STEPS: dict[str, Callable[[Bench], None]] = {
    "noop": lambda bench: drains(bench, "noop"),
    "write": lambda bench: drains(bench, "write"),
    "enqueue": enqueues,
    "latency": latencies,
    "memory": memory,
    "roundtrips": roundtrips,
    "orders": orders,
}


def run(plan: Plan, env: RedisEnv, adapters: dict[str, Adapter], results: Results) -> Results:
    results.info.update(machine=describe(env), plan=plan.__dict__)
    results.info["inside_scripts_probe"] = probe(env)
    bench = Bench(plan, env, adapters, results)
    for number in range(plan.rounds):
        bench.round = number
        for workload in plan.workloads:
            STEPS[workload](bench)
    env.flush()
    return results
