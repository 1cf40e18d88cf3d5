"""The composition root: settings, the Redis client and the job registry, wired once."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from redis import Redis

from workers.connection import RedisOptions, connect
from workers.jobtypes import JobRegistry


def redis_client(url: str, options: RedisOptions | None = None) -> Redis:
    """The Redis client for a process (workers/connection.py: time-outs, keepalive, Sentinel).

    Connects lazily, on first command; raises ValueError for a URL it cannot use.
    """
    return connect(url, options)


class AppNotFound(ValueError):
    """``--app`` / ``CHUMON_APP`` names no JobRegistry; the message says what went wrong."""


def load_registry(path: str) -> JobRegistry:
    """``module:attribute`` -> the JobRegistry it names (the operator's choice, never a job's).

    The module is imported from the current folder first, as ``rq worker`` and ``celery -A`` do:
    ``chumon worker --app myapp:registry`` finds ``./myapp.py``. A callable attribute is called
    (an app factory) and must return a JobRegistry.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise AppNotFound(f"--app / CHUMON_APP {path!r} must look like module:attribute, e.g. myapp:registry")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise AppNotFound(
            f"--app / CHUMON_APP {path!r}: no module named {exc.name!r} (looked in {os.getcwd()} and the "
            "installed packages)"
        ) from None
    except Exception as exc:  # the app's own code failed as it was imported: say where, in one line
        raise AppNotFound(
            f"--app / CHUMON_APP {path!r}: importing {module_name} failed: {_where(exc)}"
        ) from None
    try:
        value: Any = getattr(module, attribute)
    except AttributeError:
        raise AppNotFound(f"--app / CHUMON_APP {path!r}: module {module_name} has no {attribute!r}") from None
    if callable(value) and not isinstance(value, JobRegistry):
        value = value()
    if not isinstance(value, JobRegistry):
        raise AppNotFound(f"--app / CHUMON_APP {path!r} is a {type(value).__name__}, not a JobRegistry")
    return value


def _where(exc: Exception) -> str:
    """'SyntaxError: invalid syntax (myapp.py, line 3)' or 'RuntimeError: boom (at myapp.py:1)'."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno})" if frames else text
