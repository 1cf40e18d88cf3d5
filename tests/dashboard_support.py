"""Helpers for the dashboard tests: ``chumon dashboard`` in its own process, plain HTTP
requests that record every answer (and actions sent as its own pages send them, with the
CSRF token), a queue state worth looking at (a dead letter, a scheduled retry, finished jobs,
a busy worker and an idle one), and headless Chromium with its network log."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from tests.apps import sample
from tests.support import ROOT, WorkerProcess, env_for, make_settings, wait_until
from workers import EnqueueOptions, Enqueuer, RetryPolicy, load_job
from workers.codec import text
from workers.keys import Keys

KEYS = Keys()
NAP_SECONDS = 25.0  # longer than any test needs; stopping the worker interrupts it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    method: str
    path: str
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Dashboard:
    """``python -m chumon dashboard`` in a subprocess; its output goes to a file (never a pipe
    that could fill up and block it)."""

    redis_url: str
    log_path: Path
    username: str | None = None
    password: str | None = None
    port: int = field(default_factory=free_port)
    responses: list[Response] = field(default_factory=list)

    def start(self) -> None:
        env = {k: v for k, v in env_for(self.redis_url).items() if not k.startswith("CHUMON_DASHBOARD__")}
        if self.username is not None and self.password is not None:
            env.update(CHUMON_DASHBOARD__USERNAME=self.username, CHUMON_DASHBOARD__PASSWORD=self.password)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chumon", "dashboard", "--port", str(self.port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 15.0) -> None:
        def answers() -> bool:
            assert self.proc.poll() is None, f"the dashboard exited:\n{self.output()}"
            try:
                self.request("/0/data/queues.json", record=False)
            except OSError:
                return False
            return True

        wait_until(answers, timeout=timeout, message=f"the dashboard to answer on port {self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        record: bool = True,
    ) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers)
            reply = conn.getresponse()
            response = Response(method, path, reply.status, reply.read())
        finally:
            conn.close()
        if record:
            self.responses.append(response)
        return response

    def csrf_token(self, **kwargs: Any) -> str:
        """The token every page hands its scripts (base.html)."""
        page = self.request("/", **kwargs)
        assert page.status == 200, page
        found = re.search(rb'"X-CSRFToken": "([^"]+)"', page.body)
        assert found, "no CSRF token in the page"
        return found.group(1).decode()

    def action(self, path: str, **kwargs: Any) -> Response:
        """A POST as the dashboard's own page sends it: same origin, with the page's token."""
        headers = {"Origin": self.url, "X-CSRFToken": self.csrf_token(**kwargs)}
        return self.request(path, method="POST", headers=headers, **kwargs)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        response = self.request(path, **kwargs)
        assert response.status == 200, f"{path} answered {response.status}:\n{self.output()}"
        return response.json()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def running_dashboard(redis_url: str, log_path: Path, **kwargs: Any) -> Iterator[Dashboard]:
    """A started dashboard (call ``wait_ready`` before the first request); stopped afterwards."""
    dashboard = Dashboard(redis_url, log_path, **kwargs)
    dashboard.start()
    try:
        yield dashboard
    finally:
        dashboard.stop()


@dataclass(frozen=True)
class State:
    dead: str  # t.permanent: dead-lettered into q.dlq at the first attempt
    gated: str  # t.gated: failed once, its retry scheduled ten minutes ahead
    echoes: list[str]  # t.echo: finished
    nap: str  # t.sleep: running on the worker "busy" for NAP_SECONDS
    hook: str  # the dead-letter hook job, queued on "hooks" (no worker serves it here)


@contextmanager
def dashboard_state(redis: Redis, redis_url: str) -> Iterator[State]:
    """Jobs in every state the dashboard shows, with a worker busy on ``nap`` and an idle
    worker (serving the empty queue ``idle``) for the block's duration."""
    enqueuer = Enqueuer(redis, make_settings(redis_url))
    later = EnqueueOptions(retry=RetryPolicy(max_attempts=3, base=600, cap=600, jitter=0))
    dead = enqueuer.enqueue(sample.permanent, {"text": "order-7"})
    gated = enqueuer.enqueue(sample.gated, {"name": "g"}, options=later)
    echoes = [enqueuer.enqueue(sample.echo, {"text": f"e{i}"}) for i in range(3)]
    nap = enqueuer.enqueue(sample.sleep, {"name": "nap", "seconds": NAP_SECONDS})
    with ExitStack() as stack:
        for args in (["--queues", "q", "--name", "busy"], ["--queues", "idle", "--name", "idle"]):
            worker = WorkerProcess(redis_url, *args)
            stack.callback(worker.stop)

        def status(job_id: str) -> str | None:
            info = load_job(redis, KEYS, job_id)
            return info.status if info else None

        wait_until(lambda: redis.llen("test:started:nap") == 1, timeout=30, message="the nap to start")
        wait_until(lambda: status(dead) == "failed", message="the dead letter")
        wait_until(lambda: status(gated) == "scheduled", message="the scheduled retry")
        wait_until(lambda: all(status(i) == "finished" for i in echoes), message="the echoes to finish")
        # both workers have heartbeated: "busy" names its job, "idle" has no current_job (rq's way)
        wait_until(lambda: redis.hget(KEYS.rq_worker("busy"), "current_job") == nap.encode(), message="busy")
        wait_until(
            lambda: redis.hmget(KEYS.rq_worker("idle"), ["state", "current_job"]) == [b"idle", None],
            message="idle",
        )
        hooks = redis.lrange("rq:queue:hooks", 0, -1)
        assert len(hooks) == 1
        yield State(dead=dead, gated=gated, echoes=echoes, nap=nap, hook=text(hooks[0]))


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state = fields[1], fields[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    if len(address) == 8:
                        found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                    else:
                        words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8)]
                        found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


# -- the browser ------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1024",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name resolves: nothing leaves the host
]


@contextmanager
def chromium(profile: Path, log: Path) -> Iterator[Any]:
    """Headless Chromium driven by Debian's chromedriver, with its network events recorded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(log)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Network:
    """What the browser asked of the dashboard and how it answered, from chromedriver's
    performance log. Requests elsewhere (Debian's Chromium opens its search engine's start
    page in the first tab; the host resolver rules send it nowhere) are not the dashboard's."""

    def __init__(self, driver: Any, origin: str) -> None:
        self.driver = driver
        self.origin = origin
        self.urls: dict[str, str] = {}  # request id -> url, requests to the dashboard only
        self.responses: list[tuple[str, int]] = []
        self.failures: list[tuple[str, str]] = []
        self.console: list[dict[str, Any]] = []

    def collect(self) -> None:
        for entry in self.driver.get_log("performance"):
            event = json.loads(entry["message"])["message"]
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent" and params["request"]["url"].startswith(self.origin):
                self.urls[params["requestId"]] = params["request"]["url"]
            elif method == "Network.responseReceived" and params["requestId"] in self.urls:
                self.responses.append((params["response"]["url"], int(params["response"]["status"])))
            elif method == "Network.loadingFailed" and params["requestId"] in self.urls:
                # a poll cut short by leaving the page is no error
                failure = (self.urls[params["requestId"]], params["errorText"])
                self.failures += [] if params.get("canceled") else [failure]
        self.console += [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def wait_until(self, condition: Callable[[], Any], message: str) -> Any:
        """``tests.support.wait_until``; at the deadline, says what the dashboard answered amiss."""
        try:
            return wait_until(condition, message=message)
        except AssertionError as exc:
            self.collect()
            amiss = [(url, status) for url, status in self.responses if status >= 400] + self.failures
            raise AssertionError(f"{exc}; the dashboard's error responses: {amiss}") from None

    def status_of(self, url: str) -> list[int]:
        return [status for seen, status in self.responses if seen == url]


def table(driver: Any, selector: str) -> dict[str, tuple[list[str], list[str]]]:
    """Rows matching ``selector`` by their ``data-queue`` or else the text of their first cell: the
    other cells' text and the row's links, read in one script (so a table the page re-renders
    never goes stale under us)."""
    script = """
        return Array.from(document.querySelectorAll(arguments[0])).map(r => [
            r.dataset.queue || r.cells[0].innerText.trim(),
            Array.from(r.cells).map(c => c.innerText.trim()),
            Array.from(r.querySelectorAll('a')).map(a => a.href)]);"""
    rows = driver.execute_script(script, selector)
    return {key: (cells[1:], links) for key, cells, links in rows}


def text_of(driver: Any, selector: str) -> str:
    script = "var e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, selector))
