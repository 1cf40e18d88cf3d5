"""Redis memory per queued job: the growth of ``used_memory`` while N jobs are enqueued, over N.

Same payloads for every system (``{"n": i}``), enqueued with each system's bulk path into an
empty Redis. Client buffers (``mem_clients_normal``: a bulk call's query buffer stays
allocated for a while after the call) are not the jobs' memory and are left out. A warm-up
enqueue first loads the system's scripts, so the script cache (which FLUSHALL keeps) is not
counted either. N is large (20,000) so that what remains of fixed costs is small per job.
"""

from __future__ import annotations

from bench.drain import RunFailed
from bench.redisenv import RedisEnv
from bench.systems import Adapter


def data_memory(env: RedisEnv) -> int:
    info = env.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


def run_memory(env: RedisEnv, adapter: Adapter, jobs: int, batch: int) -> float:
    adapter.add_bulk("noop", range(10), batch)
    env.flush()
    before = data_memory(env)
    adapter.add_bulk("noop", range(jobs), batch)
    after = data_memory(env)
    if adapter.queued() != jobs:
        raise RunFailed(f"{adapter.system} memory: {adapter.queued()} jobs queued, expected {jobs}")
    return (after - before) / jobs
