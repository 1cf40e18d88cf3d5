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


def test_a_client_follows_a_planned_failover_when_sentinel_announces_it() -> None:
    """Issue 10: the old primary accepts writes for ~10 s after a planned failover; a client
    must move to the new one on ``+switch-master``, not when the old one finally says READONLY."""
    from tests.sentinelproc import SentinelCluster
    from workers.connection import connect
    from workers.sentinel import FollowingRedis

    if find_server() is None:
        pytest.skip("no redis-server binary")
    with SentinelCluster() as cluster:
        client = connect(cluster.url)
        assert isinstance(client, FollowingRedis) and client.watcher is not None
        client.set("before", 1)
        old = cluster.primary_port()
        wait_until(lambda: client.watcher.subscribed, timeout=30, message="the watcher to subscribe")
        cluster.failover()
        wait_until(
            lambda: client.watcher.switches == 1, timeout=30, message="the client to follow the switch"
        )
        new = cluster.primary_port()
        assert new != old
        client.set("after", 1)
        assert cluster.server(new).client().get("after") == b"1"
        client.close()
        wait_until(lambda: not client.watcher.alive, timeout=10, message="the watcher to stop")


def test_the_newest_configuration_names_the_primary() -> None:
    """Right after a switch a Sentinel that has not heard of it still names the old primary."""
    from workers.sentinel import EpochSentinel

    class Stale:
        def __init__(self, port: int, epoch: int) -> None:
            self.state = {"ip": "127.0.0.1", "port": port, "config-epoch": epoch, "is_master": True,
                          "is_sdown": False, "is_odown": False, "num-other-sentinels": 2}  # fmt: skip

        def sentinel_masters(self) -> dict:
            return {"shop": self.state}

    sentinel = EpochSentinel([])
    sentinel.sentinels = [Stale(6379, 0), Stale(6380, 1), Stale(6379, 0)]
    assert sentinel.discover_master("shop") == ("127.0.0.1", 6380)


def test_the_cli_and_the_smtp_sink_take_the_sentinel_url() -> None:
    """Issue 10: every entry point reads REDIS_URL through workers/connection.py."""
    import os
    import sys

    from tests.sentinelproc import SentinelCluster
    from tests.support import ROOT

    if find_server() is None:
        pytest.skip("no redis-server binary")
    with SentinelCluster() as cluster:
        env = {**os.environ, "REDIS_URL": cluster.url, "PYTHONPATH": str(ROOT)}
        cli = subprocess.run([sys.executable, "-m", "chumon", "queues", "--json"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        command = [sys.executable, "-m", "chumon.smtpsink", "--port", "0"]
        with subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as sink:  # fmt: skip
            assert sink.stdout is not None and sink.stderr is not None
            line = sink.stdout.readline()
            sink.terminate()
            errors = sink.stderr.read()
        assert "smtp-sink listening on" in line, errors
        assert "does not answer" not in errors
