"""``chumon``: the command line. Every command that prints data takes ``--json``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from functools import cache

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError

from chumon import app, diagram, labs, logs, ops_cli, order_cli, trace
from chumon.app import AppNotFound
from chumon.logs import mask, mask_url
from chumon.settings import load
from workers import cli as runtime_cli
from workers.cli import Exit, NotFound, UsageError
from workers.connection import check_server
from workers.errors import ServerUnsupported
from workers.jobtypes import JobRegistry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chumon", description="chumon: an event-driven order pipeline on Redis"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    runtime_cli.register(sub)
    order_cli.register(sub)
    ops_cli.register(sub)
    trace.register(sub)
    diagram.register(sub)
    labs.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load()
    except ValidationError as exc:
        return fail(settings_error(exc), Exit.USAGE)
    logs.configure(args.log_level, fmt=settings.log_format, jobs=settings.log_jobs)

    @cache
    def redis() -> Redis:
        try:
            client = app.redis_client(settings.redis_url, settings.redis)
        except ValueError as exc:
            raise UsageError(f"REDIS_URL: {exc}") from None
        # a server too old to serve is refused at once, in one line; one not reachable yet is not
        # an error here (long-running commands wait for it; the others report it below)
        with contextlib.suppress(RedisError, OSError):
            on_cluster = args.func.__module__ == runtime_cli.__name__ or getattr(
                args.func, "on_cluster", False
            )
            check_server(client, cluster=on_cluster)
        return client

    def registry(path: str | None) -> JobRegistry:
        return app.load_registry(path or settings.app)

    ctx = runtime_cli.CliContext(settings=settings, redis=redis, registry=registry, mask=mask)
    try:
        return int(args.func(args, ctx))
    except RedisError as exc:
        return fail(f"redis at {mask_url(settings.redis_url)}: {exc}", Exit.REDIS)
    except (ServerUnsupported, UsageError, AppNotFound) as exc:
        return fail(str(exc), Exit.USAGE)
    except NotFound as exc:
        return fail(str(exc), Exit.NOT_FOUND)
    except BrokenPipeError:  # `chumon ... | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.OK


def fail(message: str, code: int) -> int:
    print(mask(f"chumon: {message}"), file=sys.stderr)
    return code


def settings_error(exc: ValidationError) -> str:
    """A settings error as one line naming the environment variable: CHUMON_WORKER_TTL: ..."""
    problems = []
    for error in exc.errors():
        path = "__".join(str(part) for part in error["loc"]).upper()
        problems.append(f"CHUMON_{path}: {error['msg']}")
    return "; ".join(problems) or str(exc)


if __name__ == "__main__":
    sys.exit(main())
