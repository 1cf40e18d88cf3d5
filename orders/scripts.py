"""The order domain's Lua scripts (``orders/lua``), run like the runtime's (``workers/scripts.py``):
on Redis 7 and later as the functions of one library, loaded once, so a call does not re-create
its includes' functions; EVALSHA elsewhere, and inside pipelines (a replication wait)."""

from __future__ import annotations

from redis import Redis

from workers.scripts import Scripts

NAMES = ("place", "transition", "reserve", "release", "commit_stock", "set_stock", "put_first", "project")


def order_scripts(redis: Redis, keyspace: str) -> Scripts:
    """The order scripts bound to ``redis``; each gets only the prefixes of ``keyspace`` it reads."""
    return Scripts(redis, keyspace, package="orders", names=NAMES)
