"""Fill Redis with N settled orders quickly: copies of orders the real flow settled.

Placing 100,000 orders through the flow takes about half an hour on a 2-core machine and
holds both cores all that time. To measure what an order costs with that many orders already
kept, the cost-growth pass (``python -m bench.orderprofile --kept 1000,10000,100000``) places
real orders, then copies them: every key the real orders left, with every id in it replaced
by a fresh one, so that each copy is a distinct order with its own keys and its own entries
in the shared structures the hot path writes to.

What a copy is made of, found by reading the keyspace, not from a list kept here:

- **ids**: every 32-hex-digit token (order, job, event, correlation ids; the customer's digest)
  and every ``ch_``/``shp_`` id of the simulated gateway and carrier. Tokens that occur in
  the same key name, key value or shared-structure entry belong together (union-find); each
  group holds exactly one order id (anything else fails: the copies would share an id);
- **an order's own keys**: every key whose name holds one of its tokens (the order hash, the
  read-model summary, the customer index, the job index, the reservation, the effect keys,
  the job hashes and their result streams), written again with the same type and the same
  fields; a key that expires keeps the TTL it had left plus ``EXTRA_TTL`` (15 minutes: the
  copies' finished jobs do not all expire while a level is measured);
- **its entries in shared structures**: the event stream's entries (appended with new stream
  ids, after which every consumer group is moved past them, as if it had read them), the
  sorted-set indexes (scores are times: moved by how much later the copy is written, and an
  expiry by ``EXTRA_TTL`` too), the simulated gateway's and carrier's hashes, the SMTP sink's
  list.

Base64-encoded values (the effect records) keep the template's id inside: same size, never
read for another order. Counters (stock, the simulators' call counts) are not touched.
The flow's processes must be stopped while copies are written (the consumer groups would
read the copied events otherwise). ``compare`` checks the copies against the originals by
key pattern: type, encoding and ``MEMORY USAGE``.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

TOKEN = re.compile(rb"(?<![0-9a-f])(?:[0-9a-f]{32}|(?:ch|shp)_[0-9a-f]{24})(?![0-9a-f])")
EXTRA_TTL = 900.0
"""Seconds a copy's expiring keys (finished jobs, results) live beyond what the original had
left: none expires while a level is measured (filling 100,000 orders takes minutes, and a mass
expiry would cost Redis far more than the steady trickle of a real flow)."""


@dataclass(frozen=True)
class Score:
    """A sorted-set score, which is a time: moved by how much later the copy is written. A time
    still to come when captured (an expiry, as rq's finished registries keep) is a deadline, and
    moves EXTRA_TTL further, with the keys it stands for."""

    value: float
    deadline: bool

    def render(self, later: float) -> bytes:
        return repr(self.value + later + (EXTRA_TTL if self.deadline else 0.0)).encode()


Part = bytes | int | Score  # a literal, the index of a token in its order's token list, or a score


@dataclass
class Write:
    """One command of a copy: its arguments as literal parts and token slots."""

    command: str
    args: list[list[Part]]

    def render(self, tokens: list[bytes], later: float = 0.0) -> list[bytes]:
        return [
            b"".join(
                p if isinstance(p, bytes) else tokens[p] if isinstance(p, int) else p.render(later)
                for p in arg
            )
            for arg in self.args
        ]


@dataclass
class Recipe:
    """How to write one more order like a template order: its tokens and its writes."""

    order_id: bytes
    tokens: list[bytes]
    captured_at: float  # Redis's clock when the keyspace was read
    writes: list[Write] = field(default_factory=list)
    own_keys: list[bytes] = field(default_factory=list)  # the template's own keys (for compare)

    def fresh_tokens(self) -> list[bytes]:
        return [_fresh(token) for token in self.tokens]


def _fresh(token: bytes) -> bytes:
    prefix, _, digits = token.rpartition(b"_")
    new = os.urandom(len(digits) // 2).hex().encode()
    return prefix + b"_" + new if prefix else new


class _Groups:
    """Union-find over tokens."""

    def __init__(self) -> None:
        self.parent: dict[bytes, bytes] = {}

    def find(self, token: bytes) -> bytes:
        self.parent.setdefault(token, token)
        root = token
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[token] != root:
            self.parent[token], token = root, self.parent[token]
        return root

    def join(self, tokens: Iterable[bytes]) -> None:
        first = None
        for token in tokens:
            root = self.find(token)
            if first is None:
                first = root
            elif root != first:
                self.parent[root] = first


@dataclass
class _Item:
    """A key of one order, or one entry of a shared structure, as read from Redis."""

    key: bytes
    kind: str
    own: bool  # the order's own key (else an entry in a shared structure)
    content: list[Any]
    pttl: int = -1


def capture(redis: Redis, orders_key: str) -> list[Recipe]:
    """A recipe per order in ``orders_key`` (the sorted set of every order) from the keyspace."""
    client: Any = redis  # redis-py's replies are typed as unions; these are bytes
    order_ids: list[bytes] = client.zrange(orders_key, 0, -1)
    groups = _Groups()
    items: list[_Item] = []
    for key in redis.scan_iter(count=1000):
        items += _read(client, key)
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    for item in items:
        groups.join(_tokens(item))
    by_root: dict[bytes, Recipe] = {}
    for order_id in order_ids:
        root = groups.find(order_id)
        if root in by_root:
            raise ValueError(f"orders {by_root[root].order_id!r} and {order_id!r} share an id: no copies")
        by_root[root] = Recipe(order_id, [], now)
    slots: dict[bytes, dict[bytes, int]] = defaultdict(dict)
    for item in items:
        tokens = _tokens(item)
        if not tokens:
            continue  # counters, signals, worker records: not an order's
        recipe = by_root.get(groups.find(tokens[0]))
        if recipe is None:
            raise ValueError(f"{item.key!r} holds ids of no order: {tokens[:3]!r}")
        index = slots[recipe.order_id]
        for token in tokens:
            if token not in index:
                index[token] = len(recipe.tokens)
                recipe.tokens.append(token)
        recipe.writes += _writes(item, index, now)
        if item.own:
            recipe.own_keys.append(item.key)
    return list(by_root.values())


def _tokens(item: _Item) -> list[bytes]:
    found = TOKEN.findall(item.key) if item.own else []
    for value in _flat(item.content):
        found += TOKEN.findall(value)
    return list(dict.fromkeys(found))


def _flat(content: list[Any]) -> Iterable[bytes]:
    for value in content:
        if isinstance(value, (list, tuple)):
            yield from _flat(list(value))
        elif isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield v
        elif isinstance(value, bytes):
            yield value


def _read(client: Any, key: bytes) -> list[_Item]:
    """The key as one item (an order's own key) or one item per entry (a shared structure)."""
    redis = client
    kind = redis.type(key).decode()
    own = TOKEN.search(key) is not None
    pttl = int(redis.pttl(key))
    if kind == "string":
        content: list[Any] = [redis.get(key)]
    elif kind == "hash":
        content = list(redis.hgetall(key).items())
    elif kind == "set":
        content = sorted(redis.smembers(key))
    elif kind == "zset":
        content = [(m, repr(s).encode()) for m, s in redis.zrange(key, 0, -1, withscores=True)]
    elif kind == "list":
        content = list(redis.lrange(key, 0, -1))
    elif kind == "stream":
        content = [(i, dict(f)) for i, f in redis.xrange(key)]
    else:
        return []
    if own:
        return [_Item(key, kind, True, content, pttl)]
    return [_Item(key, kind, False, [entry]) for entry in content]


def _slot(value: bytes, index: dict[bytes, int]) -> list[Part]:
    parts: list[Part] = []
    at = 0
    for match in TOKEN.finditer(value):
        if match.start() > at:
            parts.append(value[at : match.start()])
        parts.append(index[match.group()])
        at = match.end()
    if at < len(value):
        parts.append(value[at:])
    return parts or [b""]


def _writes(item: _Item, index: dict[bytes, int], now: float) -> list[Write]:
    def w(command: str, *args: bytes | Score) -> Write:
        return Write(command, [[arg] if isinstance(arg, Score) else _slot(arg, index) for arg in args])

    def score(raw: bytes) -> Score:
        return Score(float(raw), float(raw) > now)

    key = item.key
    if not item.own:  # one entry of a shared structure
        entry = item.content[0]
        if item.kind == "zset":
            return [w("ZADD", key, score(entry[1]), entry[0])]
        if item.kind == "hash":
            return [w("HSET", key, entry[0], entry[1])]
        if item.kind == "set":
            return [w("SADD", key, entry)]
        if item.kind == "list":
            return [w("RPUSH", key, entry)]
        if item.kind == "stream":
            return [w("XADD", key, b"*", *[x for kv in entry[1].items() for x in kv])]
        raise ValueError(f"{key!r}: a shared {item.kind} with order ids")
    writes: list[Write]
    if item.kind == "string":
        writes = [w("SET", key, item.content[0])]
    elif item.kind == "hash":
        writes = [w("HSET", key, *[x for kv in item.content for x in kv])]
    elif item.kind == "set":
        writes = [w("SADD", key, *item.content)]
    elif item.kind == "zset":
        writes = [w("ZADD", key, *[x for m, s in item.content for x in (score(s), m)])]
    elif item.kind == "list":
        writes = [w("RPUSH", key, *item.content)]
    else:  # stream: the same entry ids (a new key)
        writes = [w("XADD", key, i, *[x for kv in f.items() for x in kv]) for i, f in item.content]
    if item.pttl > 0:
        writes.append(w("PEXPIRE", key, str(item.pttl + round(EXTRA_TTL * 1000)).encode()))
    return writes


def fill(
    redis: Redis,
    recipes: list[Recipe],
    count: int,
    progress: Callable[[int], None] | None = None,
    batch: int = 100,
    sample: int = 0,
) -> list[bytes]:
    """Write ``count`` copies, cycling over ``recipes``, ``batch`` orders per pipeline; returns
    the own keys of the first ``sample`` copies (for ``compare``)."""
    pipe: Any = redis.pipeline(transaction=False)
    sampled: list[bytes] = []
    for n in range(count):
        recipe = recipes[n % len(recipes)]
        tokens = recipe.fresh_tokens()
        later = time.time() - recipe.captured_at
        for write in recipe.writes:
            pipe.execute_command(write.command, *write.render(tokens, later))
        if n < sample:
            sampled += copy_keys(recipe, tokens)
        if (n + 1) % batch == 0 or n + 1 == count:
            pipe.execute()
            if progress:
                progress(n + 1)
    return sampled


def catch_up_groups(redis: Redis, stream: str) -> list[str]:
    """Move every consumer group of ``stream`` to its last entry: the copied events count as read."""
    groups = []
    client: Any = redis
    for group in client.xinfo_groups(stream):
        name = group["name"].decode() if isinstance(group["name"], bytes) else str(group["name"])
        redis.xgroup_setid(stream, name, "$")
        groups.append(name)
    return groups


def pattern_of(key: bytes) -> str:
    """A key's name with its ids as <id> (``chumon:order:<id>``)."""
    return TOKEN.sub(b"<id>", key).decode(errors="replace")


def compare(redis: Redis, originals: list[Recipe], copies: list[bytes]) -> dict[str, dict[str, Any]]:
    """By key pattern: type, encoding, mean MEMORY USAGE of the originals' keys and of ``copies``."""
    table: dict[str, dict[str, Any]] = {}
    client: Any = redis

    def add(side: str, key: bytes) -> None:
        kind = client.type(key).decode()
        if kind == "none":
            return  # expired meanwhile
        row = table.setdefault(pattern_of(key), {})
        cell = row.setdefault(side, {"keys": 0, "bytes": 0, "kinds": set()})
        cell["keys"] += 1
        cell["bytes"] += int(redis.memory_usage(key, samples=0) or 0)
        encoding = redis.object("encoding", key)
        cell["kinds"].add(f"{kind}/{encoding.decode() if isinstance(encoding, bytes) else encoding}")

    for recipe in originals:
        for key in recipe.own_keys:
            add("original", key)
    for key in copies:
        add("copy", key)
    for row in table.values():
        for cell in row.values():
            cell["mean_bytes"] = round(cell.pop("bytes") / max(1, cell["keys"]))
            cell["kinds"] = sorted(cell["kinds"])
    return table


def copy_keys(recipe: Recipe, tokens: list[bytes]) -> list[bytes]:
    """The own keys a copy of ``recipe`` with ``tokens`` wrote (for compare)."""
    keys = []
    for write in recipe.writes:
        if write.command in ("SET", "HSET", "SADD", "ZADD", "RPUSH", "XADD"):
            key = write.render(tokens)[0]
            if TOKEN.search(key) and key not in keys:
                keys.append(key)
    return keys
