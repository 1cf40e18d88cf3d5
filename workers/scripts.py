"""Loads the Lua scripts of ``workers/lua`` once, resolving their includes.

A line ``--- @include "name"`` is replaced by ``lua/includes/name.lua`` (each include once per
script), in the style of BullMQ's ``src/commands``. Scripts run with EVALSHA and are loaded on
the first NOSCRIPT, also inside pipelines (redis-py's ``Script`` does both).
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

_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"\s*$', re.MULTILINE)


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


def dumps(plan: Any) -> str:
    return json.dumps(plan, separators=(",", ":"), ensure_ascii=False)


class Scripts:
    """The runtime's scripts, bound to one Redis client (and usable on its pipelines)."""

    NAMES = (
        "enqueue", "step", "orphans", "recover", "presence", "forget", "dlq_requeue", "dlq_remove", "control",
        "flow", "report", "keep",
    )  # fmt: skip

    def __init__(self, redis: Redis, keyspace: str) -> None:
        self._keyspace = keyspace
        self._scripts: dict[str, Script] = {name: redis.register_script(source(name)) for name in self.NAMES}

    def run(self, name: str, plan: Any, client: Redis | Pipeline | None = None) -> Any:
        """Run script ``name`` with ``plan`` (JSON-encoded here) on ``client`` or the bound client."""
        return self._scripts[name](keys=[], args=[self._keyspace, dumps(plan)], client=client)
