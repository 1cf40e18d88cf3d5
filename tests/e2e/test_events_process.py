"""`chumon events` outlives Redis: started while Redis is down, through a stop and a restart
(empty: its consumer groups gone), it logs one line per outage, resumes by itself, and exits
only on a signal or on a configuration error it names."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from redis import Redis

from chumon.bootstrap import build_services
from chumon.devredis import answers, find_server, free_port
from orders.commands import PlaceOrder
from orders.keys import OrderKeys
from tests.flow import flow_settings
from tests.support import ChumonProcess, wait_until

pytestmark = pytest.mark.e2e


class RedisServer:
    """A private redis-server on a fixed port, which the test stops and starts again."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = extra
        self.workdir = tempfile.TemporaryDirectory(prefix="chumon-outage-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = find_server()
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.workdir.name, "--logfile", str(Path(self.workdir.name) / "redis.log"),
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.listening, timeout=10, message="redis to start")

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self.workdir.cleanup()


@pytest.fixture
def server() -> RedisServer:
    redis_server = RedisServer()
    yield redis_server
    redis_server.close()


def lines(process: ChumonProcess, text: str) -> int:
    return sum(1 for line in process.output.splitlines() if text in line)


def projected(url: str, order_id: str) -> bool:
    client = Redis.from_url(url)
    try:
        return bool(client.exists(OrderKeys().view_order(1, order_id)))
    finally:
        client.close()


def place(url: str) -> str:
    client = Redis.from_url(url)
    try:
        services = build_services(client, flow_settings(url, 1))
        services.inventory.set_stock("TEA", 10, 450)
        request = PlaceOrder.model_validate(
            {"customer": {"name": "Ada", "email": "ada@example.com"},
             "lines": [{"sku": "TEA", "quantity": 1}], "ship_to": "1 Lane Street"}
        )  # fmt: skip
        return services.orders.place(request).order_id
    finally:
        client.close()


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_chumon_events_survives_redis_going_away_and_coming_back(server: RedisServer, style: str) -> None:
    events = ChumonProcess(
        server.url, "events", saga__style=style, events__status_interval=0.2, saga__watchdog_interval=0.2
    )
    try:
        wait_until(
            lambda: lines(events, "redis unavailable"), timeout=30, message="the outage line"
        )  # down at start
        server.start()
        wait_until(lambda: lines(events, "redis answers again"), timeout=30, message="the recovery line")
        first = place(server.url)
        wait_until(lambda: projected(server.url, first), timeout=30, message="the projector at work")

        server.stop()  # an outage of 2 s, through ~10 status ticks and watchdog rounds
        with pytest.raises(subprocess.TimeoutExpired):
            events.proc.wait(timeout=2)
        server.start()  # an empty Redis: the consumer groups are gone and must be made again
        wait_until(
            lambda: lines(events, "redis answers again") == 2, timeout=30, message="the second recovery"
        )
        second = place(server.url)
        wait_until(lambda: projected(server.url, second), timeout=30, message="the projector at work again")

        assert lines(events, "redis unavailable") == 2, events.output  # one per outage, not per retry
        assert "Traceback" not in events.output
        events.signal(signal.SIGTERM)
        assert events.wait(timeout=15) == 0
    finally:
        events.stop()


def test_chumon_events_names_a_configuration_error_and_exits() -> None:
    server = RedisServer("--requirepass", "s3cret")
    server.start()
    try:
        assert answers(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        events = ChumonProcess(server.url, "events")  # no password
        code = events.wait(timeout=30)
        assert code == 2 and "Redis refuses these credentials" in events.output, events.output
    finally:
        server.close()
