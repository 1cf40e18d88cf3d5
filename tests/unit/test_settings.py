from pathlib import Path

import pytest
from pydantic import ValidationError

from workers import RuntimeSettings


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:1234/2")
    monkeypatch.setenv("CHUMON_WORKER_CONCURRENCY", "16")
    monkeypatch.setenv("CHUMON_RETRY__MAX_ATTEMPTS", "9")
    settings = RuntimeSettings()
    assert settings.redis_url == "redis://example:1234/2"
    assert settings.worker_concurrency == 16
    assert settings.retry.max_attempts == 9


def test_bad_settings_name_the_problem(monkeypatch) -> None:
    monkeypatch.setenv("CHUMON_WORKER_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="worker_concurrency"):
        RuntimeSettings()


def test_worker_ttl_must_exceed_two_heartbeats() -> None:
    with pytest.raises(ValidationError, match="worker_ttl"):
        RuntimeSettings(heartbeat_interval=5, worker_ttl=6)


GUARD = """
import os, sys
ROOT = sys.argv[1]  # the checkout: a clone may sit in a folder named chumon, beside its .venv
OURS = tuple(ROOT + part for part in ("/workers/", "/jobs/", "/producer/", "/orders/", "/chumon/"))
class Guard(dict):
    def _check(self, key):
        frame = sys._getframe(2)
        for _ in range(3):
            if frame is None:
                break
            if frame.f_code.co_filename.startswith(OURS):
                raise AssertionError(f"{frame.f_code.co_filename} read {key} at import time")
            frame = frame.f_back
    def __getitem__(self, key):
        self._check(key)
        return dict.__getitem__(self, key)
    def get(self, key, default=None):
        self._check(key)
        return dict.get(self, key, default)
os.environ = Guard(os.environ)
import workers, workers.worker, producer, jobs, chumon.cli, chumon.settings, chumon.app
print("ok")
"""


def test_importing_reads_no_environment() -> None:
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", GUARD, root], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
