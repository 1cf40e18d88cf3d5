"""The runtime's scripts as a Redis function library (workers/scripts.py ``Library``): called with
FCALL on Redis 7 and later, loaded again when the server lost it, turned down for EVALSHA where the
server or the user's ACL has no functions, and never carrying one call's state into the next."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from orders.scripts import NAMES as ORDER_SCRIPTS
from tests.apps import sample
from tests.flow import running_flow
from tests.support import run_burst, wait_until, worker_thread
from workers import Enqueuer, RuntimeSettings
from workers.keys import Keys
from workers.scripts import Scripts, library

KEYS = Keys()
ROOT = Path(__file__).parents[2]
INCLUDES = ROOT / "workers" / "lua" / "includes"
ORDER_INCLUDES = ROOT / "orders" / "lua" / "includes"
# caches that stay right across calls: the last second formatted (keyed by that second)
CACHES = {"iso_secs", "iso_prefix"}


def version(redis: Redis) -> tuple[int, ...]:
    return tuple(int(part) for part in str(redis.info("server")["redis_version"]).split(".")[:2])


def script_calls(redis: Redis) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("fcall", "evalsha")}


def step_plan(n: int, queues: list[str] | None = None) -> dict[str, Any]:
    ctx = {"worker": "w.1", "token": "t", "seq": 0, "claim_ttl_ms": 60_000, "defer_s": 1.0, "result_ttl": 500,
           "budget": n + 128, "dlq_retention": 3600, "dlq_max_length": 100, "events": False}  # fmt: skip
    plan: dict[str, Any] = {"ctx": ctx, "started": [], "done": [], "failed": [], "released": []}
    return {**plan, "queues": queues or ["q"], "n": n}


def test_a_worker_calls_functions_on_redis_7_and_scripts_before(
    redis: Redis, settings: RuntimeSettings
) -> None:
    redis.config_resetstat()
    Enqueuer(redis, settings).enqueue_many(sample.echo, [{"text": f"m{i}"} for i in range(30)])
    worker = run_burst(redis, sample.registry, settings, concurrency=4)
    assert worker.stats["done"] == 30
    used = script_calls(redis)
    if version(redis) >= (7, 0):
        assert used["fcall"] > 0 and used["evalsha"] == 0, used
        assert redis.function_list(library().name), "the library is loaded under its own name"
    else:
        assert used["fcall"] == 0 and used["evalsha"] > 0, used


def test_a_library_the_server_lost_is_loaded_again_under_a_running_worker(
    redis: Redis, settings: RuntimeSettings
) -> None:
    if version(redis) < (7, 0):
        pytest.skip("Redis 6.2 has no functions")
    enqueuer = Enqueuer(redis, settings)
    with worker_thread(redis, sample.registry, settings):
        enqueuer.enqueue_many(sample.echo, [{"text": f"a{i}"} for i in range(10)])
        wait_until(lambda: redis.zcard(KEYS.finished("q")) == 10, message="first ten jobs")
        redis.function_flush()  # as a restart without persistence, or an operator, would leave it
        enqueuer.enqueue_many(sample.echo, [{"text": f"b{i}"} for i in range(10)])
        wait_until(lambda: redis.zcard(KEYS.finished("q")) == 20, message="ten more after FUNCTION FLUSH")
    assert redis.llen("test:echo") == 20 and redis.zcard(KEYS.wip("q")) == 0
    assert redis.function_list(library().name)


@pytest.mark.parametrize(
    "refused", [["-fcall", "-function"], ["-function"]], ids=["no-fcall", "no-function-load"]
)
def test_a_user_without_functions_gets_scripts(redis: Redis, redis_url: str, refused: list[str]) -> None:
    if version(redis) < (7, 0):
        pytest.skip("Redis 6.2 has no functions")
    Enqueuer(redis, RuntimeSettings(redis_url=redis_url)).enqueue(sample.echo, {"text": "x"})
    redis.function_flush()  # so the library must be loaded by the user
    redis.acl_setuser("nofunctions", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", *refused])  # fmt: skip
    try:
        client = Redis.from_url(redis_url, username="nofunctions", password="pw")
        scripts = Scripts(client, KEYS.lua_keyspace)
        redis.config_resetstat()
        jobs = scripts.run("step", step_plan(1))[0]
        assert len(jobs) == 1 and not scripts.uses_functions
        used = script_calls(redis)  # a refused command is not counted; a NOSCRIPT EVALSHA is
        assert used["evalsha"] in (1, 2) and not redis.function_list(library().name), used
        client.close()
    finally:
        redis.acl_deluser("nofunctions")


def test_no_call_sees_the_state_of_the_one_before(redis: Redis, settings: RuntimeSettings) -> None:
    """A key found holding garbage is reported and skipped for the rest of *its* call only; the
    server's clock is read afresh by every call."""
    scripts = Scripts(redis, KEYS.lua_keyspace)
    redis.set(KEYS.scheduled("q"), "garbage")
    Enqueuer(redis, settings).enqueue(sample.echo, {"text": "x"})
    first = scripts.run("step", step_plan(1))
    assert first[0] == [] and [p[0] for p in first[11]] == [KEYS.scheduled("q").encode()]
    redis.delete(KEYS.scheduled("q"))
    time.sleep(0.01)
    second = scripts.run("step", step_plan(1))
    assert len(second[0]) == 1 and second[11] == [], "the garbage check and problems were the last call's"
    assert float(second[12]) > float(first[12]), "the server time was the last call's"


def test_every_include_resets_its_per_call_state() -> None:
    """In the library an include's top-level locals live between calls: each one that is not a
    constant (upper case) or a cache must be reset by its include's on_call() or by begin()."""
    missing = []
    for path in sorted([*INCLUDES.glob("*.lua"), *ORDER_INCLUDES.glob("*.lua")]):
        text = path.read_text()
        resets = " ".join(re.findall(r"on_call\(function\(\)(.*?)end\)", text, re.DOTALL))
        if path.stem == "common":
            resets += text[text.index("local function begin()") :]
        for names in re.findall(r"^local (?!function)([a-z_][a-z0-9_, ]*?)\s*(?:=|--|$)", text, re.MULTILINE):
            for name in (n.strip() for n in names.split(",")):
                if name and name not in CACHES and not re.search(rf"\b{name}\s*(,[^=]*)?=", resets):
                    missing.append(f"{path.name}: {name}")
    assert missing == []


@pytest.mark.parametrize("package", ["workers", "orders"])
def test_a_library_holds_each_include_once_and_every_script(package: str) -> None:
    names = Scripts.NAMES if package == "workers" else ORDER_SCRIPTS
    lib = library(package, names)
    for path in INCLUDES.glob("*.lua") if package == "workers" else ORDER_INCLUDES.glob("*.lua"):
        assert lib.text.count(path.read_text()) == 1, path.name
    assert lib.text.startswith(f"#!lua name={lib.name}\n")
    for name in names:
        assert f"redis.register_function('{lib.functions[name]}'" in lib.text


def test_the_order_flow_calls_functions_on_redis_7(redis: Redis, redis_url: str) -> None:
    with running_flow(redis, redis_url) as flow:
        redis.config_resetstat()
        order = flow.settled(flow.place(("TEA", 2)))
        assert order.status.value == "CONFIRMED" and flow.audit().ok
    used = script_calls(redis)
    if version(redis) >= (7, 0):
        assert used["fcall"] > 0 and used["evalsha"] == 0, used
        assert redis.function_list(library("orders", ORDER_SCRIPTS).name)
    else:
        assert used["fcall"] == 0 and used["evalsha"] > 0, used
