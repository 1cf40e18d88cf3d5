"""The machine and versions a result was measured on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from bench import ROOT
from bench.redisenv import RedisEnv
from bench.systems import version


def _run(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    for line in _run("lscpu").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Model name":
            return value.strip()
    return platform.processor() or "unknown"


PACKAGES = ("rq", "redis", "hiredis", "bullmq", "dramatiq", "pydantic")


def describe(env: RedisEnv) -> dict[str, Any]:
    return {
        "nproc": _run("nproc").strip() or str(os.cpu_count()),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": env.server_version(),
        "redis_private": env.private,
        "packages": {
            name: version(name) for name in ("rq", "redis", "hiredis", "bullmq", "dramatiq", "pydantic")
        },
        "commit": commit(),
    }


def commit() -> str:
    """The checkout's HEAD, ``+dirty`` when the work tree has changes."""
    head = _run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
    dirty = _run("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no").strip()
    return f"{head}+dirty" if head and dirty else head or "unknown"
