"""The application's settings: the runtime's, plus what the order flow needs.

This module is the one place that reads the environment: ``load()`` builds the object once
per process (entry points call it; nothing runs at import time).
"""

from __future__ import annotations

import os
from functools import cache

from workers.settings import RuntimeSettings


class Settings(RuntimeSettings):
    """Everything configurable, read from ``CHUMON_*`` variables (and ``REDIS_URL``)."""


@cache
def load() -> Settings:
    return Settings()


def explicit_redis_url() -> str | None:
    """``REDIS_URL`` (or ``CHUMON_REDIS_URL``) if the environment sets one, else None."""
    return os.environ.get("CHUMON_REDIS_URL") or os.environ.get("REDIS_URL") or None
