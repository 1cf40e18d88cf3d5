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

On Redis 7 and later (Valkey too) that direct path calls the same scripts as **functions** of
one library (``library()``, FCALL), loaded on the first "Function not found". A script sent
with EVALSHA runs its whole text on every call: the includes' dozens of function definitions
and the keyspace's JSON decode come before any work (measured on the project's machine: an
empty worker step costs 160 µs of Redis CPU as a script, 110 µs as a function; 410 against
275 µs when Redis has been idle a few milliseconds, as it is for a job arriving alone). A
function library runs that part once, when loaded; each function starts with ``begin()``
(includes/common.lua), which resets the per-call state. A server without FCALL (Redis 6.2),
or a user whose ACL forbids it, gets EVALSHA from then on; so do pipelines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import ConnectionError, NoPermissionError, NoScriptError, ResponseError, TimeoutError

from workers.connection import is_cluster, slot_client, slot_moved, slot_trouble

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
        return _include_text(include, package)

    return _INCLUDE.sub(inline, text)


class Library:
    """A package's scripts as one Redis function library: its name, text and function names.

    The text declares ``KEYS`` and ``ARGV`` as locals, then every include once (in an order that
    keeps each script's own), then registers each script's body as a function that sets them
    from its arguments and calls ``begin()``. Names carry a digest of the text, so two versions
    of chumon on one server each call their own.
    """

    def __init__(self, names: tuple[str, ...], package: str = "workers") -> None:
        includes: list[str] = []
        bodies: dict[str, str] = {}
        for name in names:
            text = (_lua_dir(package) / f"{name}.lua").read_text()
            wanted = _INCLUDE.findall(text)
            _merge(includes, wanted)
            bodies[name] = _INCLUDE.sub("", text)
        digest = hashlib.sha1("\n".join([*includes, *(bodies[n] for n in names)]).encode()).hexdigest()
        for include in includes:
            digest = hashlib.sha1((digest + _include_text(include, package)).encode()).hexdigest()
        self.name = f"chumon_{digest[:16]}"
        self.functions = {name: f"{self.name}_{name}" for name in names}
        parts = [f"#!lua name={self.name}", "local KEYS, ARGV"]
        parts += [_include_text(include, package) for include in includes]
        begin = "begin()\n" if "common" in includes else ""  # common.lua's reset of per-call state
        for name in names:
            parts.append(
                f"redis.register_function('{self.functions[name]}', function(keys, args)\n"
                f"KEYS, ARGV = keys, args\n{begin}{bodies[name]}\nend)"
            )
        self.text = "\n".join(parts)


def _merge(order: list[str], wanted: list[str]) -> None:
    """Add ``wanted`` (one script's includes, in its order) to ``order``, keeping both orders."""
    at = 0
    for include in wanted:
        if include in order:
            at = max(at, order.index(include) + 1)
        else:
            order.insert(at, include)
            at += 1


def _include_text(include: str, package: str) -> str:
    """An include's text: the package's own ``lua/includes``, else the runtime's."""
    own = _lua_dir(package) / "includes" / f"{include}.lua"
    return (own if own.exists() else _lua_dir("workers") / "includes" / f"{include}.lua").read_text()


@cache
def library(package: str = "workers", names: tuple[str, ...] | None = None) -> Library:
    return Library(names or Scripts.NAMES, package)


_UNKNOWN_FCALL = re.compile(r"unknown command [`']fcall[`']", re.IGNORECASE)
_FUNCTIONS_REFUSED = re.compile(r"run the '(fcall|function\|load)' command", re.IGNORECASE)


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

    def __init__(
        self,
        redis: Redis,
        keyspace: str,
        *,
        functions: bool = True,
        package: str = "workers",
        names: tuple[str, ...] | None = None,
    ) -> None:
        names = names or self.NAMES
        self.keyspace = keyspace
        self._redis = redis
        self._scripts: dict[str, Script] = {n: redis.register_script(source(n, package)) for n in names}
        self._keyspaces = {n: keyspace_for(source(n, package), keyspace) for n in names}
        self._cluster = is_cluster(redis)
        self._direct = not self._cluster and _plain_pool(redis)
        self._library = library(package, names) if functions else None
        self._loaded = False  # on a cluster: every script loaded on every primary (for pipelines)

    @property
    def uses_functions(self) -> bool:
        """Whether calls on the bound client go as FCALL (until the server turns them down)."""
        return self._direct and self._library is not None

    def run(
        self, name: str, plan: Any, client: Redis | Pipeline | None = None, keys: Sequence[str | bytes] = ()
    ) -> Any:
        """Run script ``name`` with ``plan`` (JSON-encoded here) and the declared ``keys`` on
        ``client`` or the bound client."""
        script, args = self._scripts[name], (self._keyspaces[name], dumps(plan))
        if client is None or client is self._redis:
            if self._direct:
                return self._call(name, script, keys, args)
            if self._cluster and keys:
                return self._slot_call(name, script, keys, args)
        if self._cluster:
            return self._cluster_call(script, keys, args, client)
        return script(keys=list(keys), args=list(args), client=client)

    def _slot_call(
        self, name: str, script: Script, keys: Sequence[str | bytes], args: tuple[str, str]
    ) -> Any:
        """On a cluster: straight to the primary of the keys' slot, as on one Redis (FCALL, else
        EVALSHA, loading what that node lacks); a slot that moved meanwhile is learnt, and the
        call sent through the cluster client, which follows it."""
        try:
            return self._call(name, script, keys, args, slot_client(self._redis, keys[0]))
        except ResponseError as exc:
            if not slot_moved(exc):
                raise
            slot_trouble(self._redis, exc)
        except (ConnectionError, TimeoutError, OSError) as exc:
            slot_trouble(self._redis, exc)
            raise
        return self._cluster_call(script, keys, args, None)

    def _cluster_call(
        self, script: Script, keys: Sequence[str | bytes], args: tuple[str, str], client: Any
    ) -> Any:
        """EVALSHA through the cluster client, which sends it to the primary of the keys' slot
        (redis-py refuses a pipelined ``evalsha`` on a cluster, not the raw command); a node that
        does not know the script (a fresh or promoted primary) gets every script loaded."""
        target: Any = self._redis if client is None else client
        if target is not self._redis and not self._loaded:  # a pipeline cannot load on NOSCRIPT
            self._load_everywhere()
        try:
            return target.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            if target is not self._redis:
                self._loaded = False
                raise
            self._load_everywhere()
            return target.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]

    def _load_everywhere(self) -> None:
        for script in self._scripts.values():
            self._redis.script_load(script.script)  # RedisCluster: on every primary
        self._loaded = True

    def _call(
        self,
        name: str,
        script: Script,
        keys: Sequence[str | bytes],
        args: tuple[str, str],
        node: Redis | None = None,
    ) -> Any:
        """FCALL, or EVALSHA, on a pooled connection (see the module's docstring) of the bound
        client, or of ``node`` (a cluster's primary)."""
        pool = (node or self._redis).connection_pool
        conn: Any = pool.get_connection()
        if node is None and conn.retry.get_retries():  # a client that retries: redis-py's path does it
            pool.release(conn)
            self._direct = False
            return script(keys=list(keys), args=list(args))
        try:
            if self._library is not None:
                try:
                    return self._fcall(conn, self._library.functions[name], self._library.text, keys, args)
                except NoPermissionError as exc:  # an ACL without FCALL or FUNCTION: scripts only
                    if not _FUNCTIONS_REFUSED.search(str(exc)):
                        raise
                    self._library = None
                except ResponseError as exc:
                    if not _UNKNOWN_FCALL.search(str(exc)):  # Redis 6.2 has no functions
                        raise
                    self._library = None
            return self._evalsha_on(conn, script, keys, args)
        except (ConnectionError, TimeoutError, OSError):
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    @staticmethod
    def _fcall(
        conn: Any, function: str, text: str, keys: Sequence[str | bytes], args: tuple[str, str]
    ) -> Any:
        conn.send_command("FCALL", function, len(keys), *keys, *args)
        try:
            return conn.read_response()
        except ResponseError as exc:
            if not str(exc).startswith("Function not found"):
                raise
        # a restarted, flushed or different server: load the library, then call again
        conn.send_command("FUNCTION", "LOAD", text)
        try:
            conn.read_response()
        except ResponseError as exc:
            if "already exists" not in str(exc):  # loaded meanwhile by another client: fine
                raise
        conn.send_command("FCALL", function, len(keys), *keys, *args)
        return conn.read_response()

    @staticmethod
    def _evalsha_on(conn: Any, script: Script, keys: Sequence[str | bytes], args: tuple[str, str]) -> Any:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return conn.read_response()
        except NoScriptError:  # a restarted or different server: load it (same sha), then run it
            conn.send_command("SCRIPT", "LOAD", script.script)
            conn.read_response()
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()


def _plain_pool(redis: Redis) -> bool:
    """Whether ``redis`` takes a pooled connection per command (not one kept connection, no cache)."""
    return redis.connection is None and getattr(redis.connection_pool, "cache", None) is None
