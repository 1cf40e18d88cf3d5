"""A Sentinel URL reaches the primary the Sentinel names (what the runbook tells operators to use)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from chumon.app import redis_client
from chumon.devredis import find_server, free_port, private_server
from tests.support import wait_until


def test_sentinel_url_finds_the_primary() -> None:
    binary = find_server()
    if binary is None:
        pytest.skip("no redis-server binary")
    with private_server() as primary_url, tempfile.TemporaryDirectory() as workdir:
        primary_port = int(primary_url.rsplit(":", 1)[1].split("/")[0])
        port = free_port()
        config = Path(workdir) / "sentinel.conf"
        config.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor shop 127.0.0.1 {primary_port} 1\n")
        sentinel = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
        try:
            client = redis_client(f"redis+sentinel://127.0.0.1:{port}/shop/0")
            wait_until(lambda: _ping(client), timeout=15, message="the sentinel to answer")
            client.set("via-sentinel", 1)
            assert redis_client(primary_url).get("via-sentinel") == b"1"
            client.close()
        finally:
            sentinel.terminate()
            sentinel.wait(timeout=10)


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
