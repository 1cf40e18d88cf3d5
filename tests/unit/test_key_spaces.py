"""The runtime's keys and the order flow's share the ``chumon:`` prefix: neither may claim the other's.

A runtime key name that equals or prefixes an order-flow key (as ``chumon:events`` once did: the
job-events stream and the domain-event stream were one key) would mix the two data sets.
"""

from __future__ import annotations

import inspect
import json

from orders.keys import OrderKeys
from workers.keys import Keys


def order_keys() -> list[str]:
    keys, found = OrderKeys(), []
    for name, member in inspect.getmembers(type(keys)):
        if name.startswith("_") or name == "lua_keyspace":
            continue
        if isinstance(member, property):
            value = getattr(keys, name)
        elif inspect.isfunction(member):
            params = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
            if any(p.kind is p.VAR_POSITIONAL for p in params):
                value = member(keys, "x", "y")
            elif all(p.annotation in ("str", str) for p in params):
                value = member(keys, *["x"] * len(params))
            elif [p.annotation for p in params] in (["int", "str"], [int, str]):
                value = member(keys, 1, "x")
            elif [p.annotation for p in params] in (["int"], [int]):
                value = member(keys, 1)
            else:
                continue
        else:
            continue
        if isinstance(value, str):
            found.append(value)
    return found


def test_no_runtime_key_is_or_prefixes_an_order_flow_key() -> None:
    found = order_keys()
    assert len(found) >= 20 and "chumon:events" in found
    runtime = [p for p in json.loads(Keys().lua_keyspace).values() if isinstance(p, str)]
    assert len(runtime) >= 20 and Keys().events in runtime
    clashes = [
        (r, key) for r in runtime for key in found if key == r or (r.endswith(":") and key.startswith(r))
    ]
    assert clashes == []


def test_the_order_scripts_keyspace_keeps_every_runtime_prefix_as_it_is() -> None:
    """orders/lua scripts include the runtime's enqueue code: a name the order domain reuses in
    its keyspace (as ``events`` once was) would send the runtime's writes into a domain key."""
    runtime = json.loads(Keys().lua_keyspace)
    orders = json.loads(OrderKeys().lua_keyspace)
    assert {name: orders.get(name) for name in runtime} == runtime
