"""``chumon lab ...``: the concepts of event-driven design, run and measured on a real Redis.

Each lab starts a private ``redis-server`` (stopped when it ends) unless given
``--redis-url``; then it keeps its keys under a prefix of its own (``chumon-lab-<random>:``)
and deletes them when done. Every number a lab prints is counted in that run, from Redis.

- ``queue-vs-stream`` (chumon/labs/streams.py): a list consumed by two consumers, a stream
  read by two consumer groups, a late group replaying, a trim losing what a slow group had
  not read;
- ``delivery`` (chumon/labs/delivery.py): one charging job run at most once, at least once
  without keys and at least once with idempotency keys, with crashes injected; lost and
  doubled charges counted;
- ``consistency`` (chumon/labs/consistency.py): the read model read right after a write,
  after waiting for the write's version, and the write side read instead.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from redis import Redis

from workers.cli import CliContext, emit


@contextmanager
def lab_redis(url: str | None) -> Iterator[tuple[Redis, str]]:
    """A Redis for one lab run and the key prefix to use in it; its keys are gone afterwards."""
    from chumon.devredis import private_server

    if url is None:
        with private_server() as private:
            client = Redis.from_url(private)
            try:
                yield client, "lab:"
            finally:
                client.close()
        return
    client = Redis.from_url(url)
    prefix = f"chumon-lab-{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


Runner = Callable[[Redis, str, argparse.Namespace], BaseModel]


def command(run: Runner, render: Callable[[Any], str]) -> Any:
    def cmd(args: argparse.Namespace, ctx: CliContext) -> int:
        with lab_redis(args.redis_url) as (redis, prefix):
            result = run(redis, prefix, args)
        emit(result, args.json, render, ctx.mask)
        return 0

    return cmd


def register(sub: Any) -> None:
    from chumon.labs import consistency, delivery, streams

    lab = sub.add_parser("lab", help="runnable labs: queue vs stream, delivery guarantees, consistency")
    labs = lab.add_subparsers(dest="lab", required=True)
    for name, module, private_only in (
        ("queue-vs-stream", streams, False),
        ("delivery", delivery, False),
        ("consistency", consistency, True),
    ):
        parser = labs.add_parser(name, help=module.HELP, description=module.__doc__)
        parser.add_argument("--json", action="store_true")
        if not private_only:
            parser.add_argument(
                "--redis-url",
                help="run on this Redis, under a key prefix of its own (default: a private server)",
            )
        else:  # the order flow's jobs use rq's fixed key names (rq:queue:...): never on a shared Redis
            parser.set_defaults(redis_url=None)
        module.arguments(parser)
        parser.set_defaults(func=command(module.run, module.render))
