"""Which keys each script call touched without declaring them in KEYS, seen through MONITOR.

Redis Cluster, Dragonfly and ACL key patterns need every key a script touches to be one of
its KEYS. ``watching(redis_url)`` records MONITOR while a scenario runs; ``Calls.undeclared()``
then pairs each script call (an EVALSHA, EVAL or FCALL line) with the commands its script ran (the
``lua`` client's lines that follow it: Redis 6.2 and 7 both feed a script's line to monitors
before the commands it runs, and no other client's command can come between them), finds
each command's keys from ``COMMAND INFO`` (``COMMAND GETKEYS`` for commands whose key
positions depend on their arguments), and lists those that are not among the call's KEYS.

Only for tests: production code carries nothing of this.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import ResponseError

from orders.scripts import NAMES as ORDER_LIBRARY
from workers.scripts import Scripts, library, source

_LINE = re.compile(rb"^\d+\.\d+ \[\d+ ([^\]]*)\] (.*)$", re.DOTALL)
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("a"): b"\a", ord("b"): b"\b"}


def parse_args(text: bytes) -> list[bytes]:
    """The arguments of one MONITOR line: quoted, escaped as Redis's sdscatrepr escapes them."""
    args: list[bytes] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == ord(" "):
            i += 1
            continue
        if text[i] != ord('"'):
            raise ValueError(f"unexpected MONITOR text at {i}: {text[i : i + 40]!r}")
        i += 1
        out = bytearray()
        while text[i] != ord('"'):
            if text[i] == ord("\\"):
                nxt = text[i + 1]
                if nxt == ord("x"):
                    out.append(int(text[i + 2 : i + 4], 16))
                    i += 4
                    continue
                out += _ESCAPES.get(nxt, bytes([nxt]))
                i += 2
                continue
            out.append(text[i])
            i += 1
        args.append(bytes(out))
        i += 1
    return args


def script_names(packages: Iterable[tuple[str, Iterable[str]]]) -> dict[str, str]:
    """sha1 (its text as loaded, includes inlined) and function name (in its package's library,
    workers/scripts.py) -> "package/name" of each script."""
    names = {}
    for package, scripts in packages:
        functions = library(package, LIBRARIES[package]).functions
        for name in scripts:
            names[hashlib.sha1(source(name, package).encode()).hexdigest()] = f"{package}/{name}"
            names[functions[name]] = f"{package}/{name}"
    return names


ORDER_SCRIPTS = ORDER_LIBRARY
RUNTIME_SCRIPTS = Scripts.NAMES
LIBRARIES = {"orders": ORDER_LIBRARY, "workers": RUNTIME_SCRIPTS}  # each package's library, as it is made


@dataclass
class Call:
    """One script call: the script, its declared KEYS, and each command it ran (as arguments)."""

    script: str
    declared: list[bytes]
    commands: list[list[bytes]] = field(default_factory=list)


@dataclass
class Calls:
    calls: list[Call]
    redis: Redis
    _positions: dict[tuple[bytes, int], list[int] | None] = field(default_factory=dict)

    def keys_of(self, command: list[bytes]) -> list[bytes]:
        """The keys ``command`` names: from its fixed key positions, or COMMAND GETKEYS."""
        shape = (command[0].upper(), len(command))
        if shape not in self._positions:
            self._positions[shape] = self._fixed_positions(command)
        positions = self._positions[shape]
        if positions is None:
            try:
                keys = self.redis.execute_command("COMMAND GETKEYS", *command)
                return [key.encode() if isinstance(key, str) else key for key in keys]
            except ResponseError:  # "the command has no key arguments"
                return []
        return [command[i] for i in positions]

    def _fixed_positions(self, command: list[bytes]) -> list[int] | None:
        """Key positions from COMMAND INFO's first/last/step; None when they depend on arguments."""
        reply = self.redis.execute_command("COMMAND", "INFO", command[0].decode())
        info = reply[command[0].decode().lower()] if isinstance(reply, dict) else reply[0]
        if isinstance(info, dict):  # redis-py's parsed form
            flags = {f.decode() if isinstance(f, bytes) else f for f in info["flags"]}
            first, last, step = info["first_key_pos"], info["last_key_pos"], info["step_count"]
        else:
            flags = {f.decode() if isinstance(f, bytes) else f for f in info[2]}
            first, last, step = info[3], info[4], info[5]
        if "movablekeys" in flags:
            return None
        if first == 0:
            return []
        last = last if last > 0 else len(command) + last
        return list(range(first, last + 1, step))

    def undeclared(self, scripts: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
        """(script, command, key) for each key a call touched outside its KEYS, once each."""
        wanted = set(scripts) if scripts is not None else None
        found: dict[tuple[str, str, str], None] = {}
        for call in self.calls:
            if wanted is not None and call.script not in wanted:
                continue
            declared = set(call.declared)
            for command in call.commands:
                for key in self.keys_of(command):
                    if key not in declared:
                        found[(call.script, command[0].decode().upper(), key.decode(errors="replace"))] = None
        return list(found)

    def declared_counts(self) -> dict[str, Counter[int]]:
        """script -> how many calls declared how many keys (calls that ran commands)."""
        counts: dict[str, Counter[int]] = {}
        for call in self.calls:
            if call.commands:
                counts.setdefault(call.script, Counter())[len(call.declared)] += 1
        return counts


def calls_of(lines: list[bytes], names: dict[str, str]) -> list[Call]:
    """Script calls from raw MONITOR lines, each with the commands of the ``lua`` lines after it."""
    calls: list[Call] = []
    current: Call | None = None
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue
        client, args = match.group(1), parse_args(match.group(2))
        if client == b"lua":
            if current is None:
                raise AssertionError(f"a script's command without its script call: {line[:200]!r}")
            current.commands.append(args)
            continue
        current = None
        verb = args[0].upper()
        if verb in (b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO"):
            sha = args[1].decode() if verb.startswith(b"EVALSHA") else hashlib.sha1(args[1]).hexdigest()
            current = Call(names.get(sha, f"unknown script {sha[:10]}"), args[3 : 3 + int(args[2])])
            calls.append(current)
        elif verb in (b"FCALL", b"FCALL_RO"):  # a function of a library (Redis 7+), by its name
            function = args[1].decode()
            current = Call(names.get(function, f"function {function}"), args[3 : 3 + int(args[2])])
            calls.append(current)
    return calls


@contextmanager
def watching(redis_url: str, names: dict[str, str] | None = None) -> Iterator[list[Call]]:
    """MONITOR while the block runs; afterwards the list it yields holds every script call."""
    names = (
        names
        if names is not None
        else script_names([("orders", ORDER_SCRIPTS), ("workers", RUNTIME_SCRIPTS)])
    )
    marker = f"declared-keys-test:end:{uuid.uuid4().hex}".encode()
    lines: list[bytes] = []
    monitor_client = Redis.from_url(redis_url)
    monitor = monitor_client.monitor()
    monitor.__enter__()  # sends MONITOR and reads its OK
    failure: list[BaseException] = []

    def read() -> None:
        try:
            while True:
                line = monitor.connection.read_response()
                assert isinstance(line, bytes)
                if marker in line:
                    return
                lines.append(line)
        except BaseException as exc:  # handed to the test below
            failure.append(exc)

    reader = threading.Thread(target=read, name="monitor", daemon=True)
    reader.start()
    calls: list[Call] = []
    try:
        yield calls
    finally:
        with Redis.from_url(redis_url) as client:
            client.exists(marker)  # a read: the reader stops at its line
        reader.join(timeout=30)
        monitor.connection.disconnect()
        monitor_client.close()
    if reader.is_alive() or failure:
        raise AssertionError(f"MONITOR reader did not finish cleanly: {failure}")
    calls.extend(calls_of(lines, names))
