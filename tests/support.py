"""Helpers for tests: settings with fast timings, waiting with a deadline, workers in threads
and in real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis import Redis

from workers import JobRegistry, RetryPolicy, RuntimeSettings, Worker

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.02  # seconds between two checks of a condition

FAST = {
    "retry": RetryPolicy(max_attempts=3, base=0.05, factor=2.0, cap=1.0, jitter=0.0),
    "heartbeat_interval": 0.2,
    "worker_ttl": 2.0,
    "recovery_interval": 0.3,
    "drain_timeout": 1.0,
    "timeout_grace": 0.5,
    "defer_delay": 0.1,
}


def make_settings(redis_url: str, **overrides: Any) -> RuntimeSettings:
    return RuntimeSettings(redis_url=redis_url, **{**FAST, **overrides})


def wait_until(condition: Callable[[], Any], *, timeout: float = 10.0, message: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(POLL)


@contextmanager
def worker_thread(
    redis: Redis, registry: JobRegistry, settings: RuntimeSettings, **kwargs: Any
) -> Iterator[Worker]:
    """A worker running in a background thread for the block's duration."""
    worker = Worker(redis, registry, settings, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "worker thread did not stop"
        if errors:
            raise errors[0]


def run_burst(redis: Redis, registry: JobRegistry, settings: RuntimeSettings, **kwargs: Any) -> Worker:
    worker = Worker(redis, registry, settings, **kwargs)
    worker.run(burst=True)
    return worker


def env_for(redis_url: str, **settings: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        CHUMON_HEARTBEAT_INTERVAL=str(FAST["heartbeat_interval"]),
        CHUMON_RECOVERY_INTERVAL=str(FAST["recovery_interval"]),
        CHUMON_WORKER_TTL=str(FAST["worker_ttl"]),
        CHUMON_DRAIN_TIMEOUT=str(FAST["drain_timeout"]),
        CHUMON_TIMEOUT_GRACE=str(FAST["timeout_grace"]),
        CHUMON_DEFER_DELAY=str(FAST["defer_delay"]),
        CHUMON_RETRY__BASE="0.05",
        CHUMON_RETRY__JITTER="0",
    )
    env.update({f"CHUMON_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class ChumonProcess:
    """A ``chumon`` command in its own process (a real process: it can be SIGKILLed).

    Its output goes to a file, not a pipe: a pipe nobody reads while the process runs fills
    up (64 KB of job lines) and blocks the process on its next write.
    """

    group = False  # signalled as a process group (set below; a subclass may start its own process)

    def __init__(self, redis_url: str, *args: str, wrapper: list[str] | None = None, **settings: Any):
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed by wait())
        self._output = ""
        # a wrapper (faketime) may fork the process instead of exec'ing it: it then gets a group
        # of its own, and signals go to the whole group, or the real process outlives the test
        self.group = bool(wrapper)
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "chumon", *args],
            env=env_for(redis_url, **settings),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=self.group,
        )

    @property
    def output(self) -> str:
        if self.log.closed:
            return self._output
        self.log.seek(0)
        return self.log.read()

    def signal(self, sig: int) -> None:
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(timeout=10)

    def wait(self, timeout: float = 15) -> int:
        """Wait for the process to end; then keep its output and close the file."""
        code = self.proc.wait(timeout=timeout)
        if not self.log.closed:
            self._output = self.output
            self.log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            self.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.wait()


class WorkerProcess(ChumonProcess):
    """``chumon worker`` with the test app (or ``app``)."""

    def __init__(
        self,
        redis_url: str,
        *args: str,
        app: str = "tests.apps.sample:registry",
        wrapper: list[str] | None = None,
        **settings: Any,
    ):
        super().__init__(redis_url, "worker", "--app", app, *args, wrapper=wrapper, **settings)
