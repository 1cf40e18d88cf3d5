"""Loads the Lua scripts of ``workers/lua`` once, resolving their includes.

A line ``--- @include "name"`` is replaced by ``lua/includes/name.lua`` (each include once per
script), in the style of BullMQ's ``src/commands``. Scripts run with EVALSHA and are loaded on
the first NOSCRIPT, also inside pipelines (redis-py's ``Script`` does both).

A script run on the bound client (no pipeline: every enqueue, every worker step) is sent on a
connection of the client's pool directly, as redis-py's ``execute_command`` would send it but
without its per-command wrappers (retry closure, observability hooks): measured on the
project's machine, they cost 35 µs of Python per command, a sixth of a one-by-one enqueue.
Errors behave as through the client with no retries (chumon's clients: workers/connection.py):
a connection error or time-out closes the connection and is raised. A client that retries,
keeps one connection, or caches goes through redis-py's own path.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"\s*$', re.MULTILINE)
_K_FIELD = re.compile(r"\bK\.([A-Za-z_][A-Za-z0-9_]*)")
_K_OTHERWISE = re.compile(r"\bK\s*\[|[=(,]\s*K\s*[,)\n]|\bK\s*$", re.MULTILINE)


def _lua_dir(package: str) -> Path:
    return Path(str(files(package))) / "lua"


@cache
def source(name: str, package: str = "workers") -> str:
    """The text of script ``name`` with its includes inlined.

    An include is looked up in the package's own ``lua/includes`` first, then in the runtime's.
    """
    text = (_lua_dir(package) / f"{name}.lua").read_text()
    seen: set[str] = set()

    def inline(match: re.Match[str]) -> str:
        include = match.group(1)
        if include in seen:
            return ""
        seen.add(include)
        own = _lua_dir(package) / "includes" / f"{include}.lua"
        return (own if own.exists() else _lua_dir("workers") / "includes" / f"{include}.lua").read_text()

    return _INCLUDE.sub(inline, text)


# one encoder for every call: json.dumps with options builds a JSONEncoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(plan: Any) -> str:
    """Compact JSON, UTF-8 kept as is (what every script's plan and every payload is sent as)."""
    return _ENCODER.encode(plan)


def keyspace_for(text: str, keyspace: str) -> str:
    """The part of ``keyspace`` (JSON) that a script's ``text`` reads as ``K.name``: Redis decodes
    the keyspace on every call, and a one-by-one enqueue reads 11 of its 33 prefixes (measured:
    5 us of Redis CPU less per enqueue). A script that uses ``K`` any other way gets all of it."""
    if _K_OTHERWISE.search(text):
        return keyspace
    used = set(_K_FIELD.findall(text))
    return dumps({name: prefix for name, prefix in json.loads(keyspace).items() if name in used})


class Scripts:
    """The runtime's scripts, bound to one Redis client (and usable on its pipelines)."""

    NAMES = (
        "enqueue", "step", "orphans", "recover", "presence", "forget", "dlq_requeue", "dlq_remove", "control",
        "flow", "report", "keep",
    )  # fmt: skip

    def __init__(self, redis: Redis, keyspace: str) -> None:
        self._redis = redis
        self._scripts: dict[str, Script] = {name: redis.register_script(source(name)) for name in self.NAMES}
        self._keyspaces = {name: keyspace_for(source(name), keyspace) for name in self.NAMES}
        self._direct = _plain_pool(redis)

    def run(self, name: str, plan: Any, client: Redis | Pipeline | None = None) -> Any:
        """Run script ``name`` with ``plan`` (JSON-encoded here) on ``client`` or the bound client."""
        script, keyspace = self._scripts[name], self._keyspaces[name]
        if self._direct and (client is None or client is self._redis):
            return self._evalsha(script, keyspace, dumps(plan))
        return script(keys=[], args=[keyspace, dumps(plan)], client=client)

    def _evalsha(self, script: Script, keyspace: str, plan: str) -> Any:
        """EVALSHA on a pooled connection (see the module's docstring); loads the script on NOSCRIPT."""
        pool = self._redis.connection_pool
        conn: Any = pool.get_connection()
        if conn.retry.get_retries():  # a client that retries: redis-py's path does it
            pool.release(conn)
            self._direct = False
            return script(keys=[], args=[keyspace, plan])
        try:
            conn.send_command("EVALSHA", script.sha, 0, keyspace, plan)
            try:
                return conn.read_response()
            except NoScriptError:  # a restarted or different server: load it (same sha), then run it
                conn.send_command("SCRIPT", "LOAD", script.script)
                conn.read_response()
                conn.send_command("EVALSHA", script.sha, 0, keyspace, plan)
                return conn.read_response()
        except (ConnectionError, TimeoutError, OSError):
            conn.disconnect()
            raise
        finally:
            pool.release(conn)


def _plain_pool(redis: Redis) -> bool:
    """Whether ``redis`` takes a pooled connection per command (not one kept connection, no cache)."""
    return redis.connection is None and getattr(redis.connection_pool, "cache", None) is None
