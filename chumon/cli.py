"""``chumon``: the command line. Every command that prints data takes ``--json``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from functools import cache

from redis import Redis
from redis.exceptions import RedisError

from chumon import app, logs, ops_cli, order_cli
from chumon.logs import mask
from chumon.settings import load
from workers import cli as runtime_cli
from workers.connection import check_server
from workers.errors import ServerUnsupported
from workers.jobtypes import JobRegistry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chumon", description="chumon: an event-driven order pipeline on Redis"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    runtime_cli.register(sub)
    order_cli.register(sub)
    ops_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load()
    logs.configure(args.log_level, fmt=settings.log_format, jobs=settings.log_jobs)

    @cache
    def redis() -> Redis:
        client = app.redis_client(settings.redis_url, settings.redis)
        # a server too old to serve is refused at once, in one line; one not reachable yet is not
        # an error here (long-running commands wait for it; the others report it below)
        with contextlib.suppress(RedisError, OSError):
            check_server(client)
        return client

    def registry(path: str | None) -> JobRegistry:
        return app.load_registry(path or settings.app)

    ctx = runtime_cli.CliContext(settings=settings, redis=redis, registry=registry, mask=mask)
    try:
        return int(args.func(args, ctx))
    except RedisError as exc:
        print(mask(f"chumon: redis at {settings.redis_url}: {exc}"), file=sys.stderr)
        return 3
    except ServerUnsupported as exc:
        print(f"chumon: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
