"""Every order-domain script (orders/lua) declares in KEYS every key it touches.

Redis Cluster, Dragonfly and ACL key patterns refuse or misroute a script that touches a key it
did not declare. The order flow's main paths run under MONITOR (tests/declaredkeys.py), and any
key a script's command touched outside that call's KEYS fails the test, naming script and key.
The runtime's own scripts (workers/lua) are checked in test_runtime_declared_keys.py, and
docs/operations.md says which of them still build keys in Lua.
"""

from __future__ import annotations

from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
from redis import Redis

from orders.errors import IdempotencyConflict
from orders.keys import OrderKeys
from orders.projector import rebuild
from tests.declaredkeys import ORDER_SCRIPTS, Call, Calls, calls_of, parse_args, script_names, watching
from tests.flow import running_flow
from workers.keys import Keys
from workers.scripts import dumps

ORDERS = [f"orders/{name}" for name in ORDER_SCRIPTS]


def _includes(name: str) -> str:
    return (Path(str(files("workers"))) / "lua" / "includes" / f"{name}.lua").read_text()


def _report(calls: Calls) -> str:
    counts = calls.declared_counts()
    return "; ".join(
        f"{script}: {sum(c.values())} calls, keys declared {dict(sorted(c.items()))}"
        for script, c in sorted(counts.items())
    )


def _undeclared_report(undeclared: list[tuple[str, str, str]]) -> str:
    """Per script: how many keys it touched undeclared, and the first few (command and key)."""
    by_script: dict[str, list[str]] = {}
    for script, command, key in undeclared:
        by_script.setdefault(script, []).append(f"{command} {key}")
    lines = ["keys touched but not declared in KEYS:"]
    for script, touched in sorted(by_script.items()):
        more = ", ..." if len(touched) > 6 else ""
        lines.append(f"  {script}: {len(touched)}: " + ", ".join(touched[:6]) + more)
    return "\n".join(lines)


@pytest.mark.parametrize("job_events", [False, True])
def test_order_scripts_declare_every_key_they_touch(redis: Redis, redis_url: str, job_events: bool) -> None:
    with watching(redis_url) as seen, running_flow(redis, redis_url, job_events=job_events) as flow:
        placed = flow.place(("TEA", 2), ("MUG", 1))
        again = flow.producer.place_order(
            items=[("TEA", 1)], customer_name="Ada", customer_email="ada@example.com",
            ship_to="12 Analytical Lane", idempotency_key="k-1",
        )  # fmt: skip
        repeated = flow.producer.place_order(
            items=[("TEA", 1)], customer_name="Ada", customer_email="ada@example.com",
            ship_to="12 Analytical Lane", idempotency_key="k-1",
        )  # fmt: skip
        assert repeated.order_id == again.order_id and not repeated.created
        with pytest.raises(IdempotencyConflict):
            flow.producer.place_order(
                items=[("MUG", 1)], customer_name="Ada", customer_email="ada@example.com",
                ship_to="12 Analytical Lane", idempotency_key="k-1",
            )  # fmt: skip
        declined = flow.place(("TEA", 3), payment_token="tok_declined")
        short = flow.place(("POT", 11))
        assert flow.settled(placed).status.value == "CONFIRMED"
        assert flow.settled(again.order_id).status.value == "CONFIRMED"
        assert flow.settled(declined).status.value == "CANCELLED"
        assert flow.settled(short).status.value == "CANCELLED"

        inventory = flow.services.inventory
        inventory.set_stock("NEW", 5, 100)
        inventory.set_stock("NEW", 6)
        assert inventory.reserve("direct-1", [("NEW", 2), ("TEA", 1)]).ok
        assert inventory.commit("direct-1") == "committed"
        assert inventory.commit("direct-1") == "committed"  # again: nothing changes
        assert inventory.reserve("direct-2", [("NEW", 1)]).ok
        assert inventory.release("direct-2") == "released"
        assert inventory.release("direct-3") == "void"  # before any reserve
        assert not inventory.reserve("direct-3", [("NEW", 1)]).ok
        assert not inventory.reserve("direct-4", [("NEW", 100)]).ok  # short
        assert inventory.commit("direct-5") is None  # no reservation

        for order_id in (placed, again.order_id, declined, short):
            summary = flow.producer.wait_for_order(order_id, timeout=20)
            assert summary is not None and summary.status.value in ("CONFIRMED", "CANCELLED")
        rebuild(redis, OrderKeys(), flow.producer.view)

    calls = Calls(seen, redis)
    ran = {call.script for call in seen if call.commands}
    assert {f"orders/{name}" for name in ORDER_SCRIPTS} <= ran, f"not exercised: {set(ORDERS) - ran}"
    undeclared = calls.undeclared(ORDERS)
    print(_report(calls))
    assert not undeclared, _undeclared_report(undeclared)


ENQUEUE_JOB = (
    f"{_includes('common')}\n{_includes('enqueue_job')}\n"
    "for _, job in ipairs(cjson.decode(ARGV[2])) do enqueue_job(job) end\n"
    "flush_touched()\n"
    "return #problems\n"
)


def test_enqueue_job_keys_cover_every_option_of_a_job(redis: Redis, redis_url: str) -> None:
    """Keys.enqueue_job_keys lists what enqueue_job.lua touches, whatever the job's options (the
    flow above only enqueues plain jobs)."""
    keys = Keys()
    jobs = [
        {"id": "plain", "queue": "q1", "fields": ["data", "x"]},
        {"id": "prio", "queue": "q1", "fields": ["data", "x"], "priority": 5},
        {"id": "prio-front", "queue": "q2", "fields": ["data", "x"], "priority": 5, "at_front": True},
        {"id": "front", "queue": "q2", "fields": ["data", "x"], "at_front": True},
        {"id": "later", "queue": "q3", "fields": ["data", "x"], "delay": 60, "events": 100},
        {"id": "keyed", "queue": "q3", "fields": ["data", "x"], "enqueue_key": "t:k", "enqueue_key_ttl": 60},
        {"id": "again", "queue": "q3", "fields": ["data", "x"], "enqueue_key": "t:k", "enqueue_key_ttl": 60},
    ]
    script = redis.register_script(ENQUEUE_JOB)
    declared = list(dict.fromkeys(key for job in jobs for key in keys.enqueue_job_keys(job)))
    with watching(redis_url, names={script.sha: "test/enqueue_job"}) as seen:
        assert script(keys=declared, args=[keys.lua_keyspace, dumps(jobs)]) == 0
    calls = Calls(seen, redis)
    touched = {key for call in seen for command in call.commands for key in calls.keys_of(command)}
    assert calls.undeclared() == []
    wanted = [keys.prioritized("q1"), keys.priority_seq("q1"), keys.scheduled("q3"), keys.enqueue_key("t:k")]
    wanted.append(keys.events)
    assert {key.encode() for key in wanted} <= touched  # each option's own key was used


def test_the_checker_sees_an_undeclared_key(redis: Redis, redis_url: str) -> None:
    """The checker itself: a script touching a key it did not declare is caught, on this server."""
    script = redis.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]); redis.call('TIME'); "
        "redis.call('HSET', 'built \"in\" lua', 'f', ARGV[1]); "
        "return redis.call('XADD', KEYS[2], '*', 'a', ARGV[1])"
    )
    with watching(redis_url, names={script.sha: "test/probe"}) as seen:
        script(keys=["declared", "stream"], args=['{"json": "with \\"quotes\\"\\n"}'])
    calls = Calls(seen, redis)
    assert [call.declared for call in seen if call.commands] == [[b"declared", b"stream"]]
    assert calls.undeclared() == [("test/probe", "HSET", 'built "in" lua')]
    assert calls.declared_counts() == {"test/probe": Counter({2: 1})}


def test_monitor_lines_are_parsed_as_redis_escapes_them() -> None:
    assert parse_args(b'"SET" "a\\"b" "\\x00\\xc3\\xa9\\n" ""') == [b"SET", b'a"b', b"\x00\xc3\xa9\n", b""]
    lines = [
        b'1.1 [0 127.0.0.1:1] "EVALSHA" "abc" "1" "k" "argv"',
        b'1.2 [0 lua] "GET" "k"',
        b'1.3 [0 127.0.0.1:1] "GET" "x"',
    ]
    assert calls_of(lines, {"abc": "t/s"}) == [Call("t/s", [b"k"], [[b"GET", b"k"]])]
    fcall = [b'1.1 [0 127.0.0.1:1] "FCALL" "step" "0" "{}"', b'1.2 [0 lua] "TIME"']
    assert calls_of(fcall, {}) == [Call("function step", [], [[b"TIME"]])]
    assert script_names([("orders", ["put_first"])])  # sha of the text as loaded
