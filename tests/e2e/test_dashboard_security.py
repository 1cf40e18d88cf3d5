"""``chumon dashboard`` from outside, as an attacker and as an operator setting it up.

- Cross-site requests (a page of another site, in the operator's browser), DNS rebinding
  (``Host: evil.example``) and GETs on the actions: 403, and not one key of Redis changes.
  The same action sent the way the dashboard's own page sends it works, so the refusals are
  not a dashboard that refuses everything.
- Settings that would serve it unprotected: it refuses to start, with one line naming the
  setting. The startup line and a Redis error never show the Redis password.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.apps import sample
from tests.dashboard_support import KEYS, Dashboard, free_port, running_dashboard
from tests.support import ROOT, env_for, make_settings, run_burst, wait_until
from workers import Enqueuer

pytestmark = pytest.mark.e2e
EVIL = "http://evil.example"


def snapshot(redis: Redis) -> dict[bytes, Any]:
    """Every key with its serialized value: equal snapshots, nothing changed."""
    return {key: redis.dump(key) for key in sorted(redis.scan_iter(count=1000))}


def dead_letters(redis: Redis, redis_url: str, n: int) -> list[str]:
    settings = make_settings(redis_url)
    enqueuer = Enqueuer(redis, settings)
    ids = [enqueuer.enqueue(sample.permanent, {"text": f"order-{i}"}) for i in range(n)]
    run_burst(redis, sample.registry, settings, queues=["q"])
    assert sorted(redis.lrange("rq:queue:q.dlq", 0, -1)) == sorted(i.encode() for i in ids)
    return ids


def test_cross_site_rebinding_and_get_requests_are_refused_and_change_nothing(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    dead, other = dead_letters(redis, redis_url, 2)
    queued = Enqueuer(redis, make_settings(redis_url)).enqueue(sample.echo, {"text": "waiting"})
    with running_dashboard(redis_url, tmp_path / "dashboard.log") as dash:
        dash.wait_ready()
        token = dash.csrf_token()
        before = snapshot(redis)
        actions = [
            f"/job/{dead}/requeue",
            f"/job/{dead}/delete",
            "/requeue/q",
            "/requeue/q.dlq",
            "/queue/q.dlq/queued/empty",
            "/queue/q/failed/empty",
            "/queue/q/queued/empty",
            "/queue/q/compact",
        ]
        rebound = {"Host": f"evil.example:{dash.port}"}
        attempts: list[tuple[str, str, dict[str, str]]] = []
        for path in actions:
            attempts += [
                # a form or fetch() on evil.example, without and with a token it could not read anyway
                ("POST", path, {"Origin": EVIL}),
                ("POST", path, {"Origin": EVIL, "X-CSRFToken": token}),
                ("POST", path, {"Referer": f"{EVIL}/page", "X-CSRFToken": token}),
                ("POST", path, {"Origin": "null", "X-CSRFToken": token}),  # a sandboxed frame, a file
                ("POST", path, {"Sec-Fetch-Site": "cross-site", "X-CSRFToken": token}),
                ("POST", path, {"Sec-Fetch-Site": "same-site", "X-CSRFToken": token}),
                ("POST", path, {"Origin": f"http://127.0.0.1:{dash.port + 1}", "X-CSRFToken": token}),
                # same origin, but no token or a wrong one
                ("POST", path, {"Origin": dash.url}),
                ("POST", path, {"Origin": dash.url, "X-CSRFToken": token[:-1]}),
                # DNS rebinding: evil.example re-pointed at 127.0.0.1, so the browser calls it same-origin
                (
                    "POST",
                    path,
                    {**rebound, "Origin": f"http://evil.example:{dash.port}", "X-CSRFToken": token},
                ),
                # state changes by GET (a link, an <img src>), and other methods
                ("GET", path, {}),
                ("GET", path, {"X-CSRFToken": token}),
                ("HEAD", path, {}),
                ("PUT", path, {"Origin": dash.url, "X-CSRFToken": token}),
            ]
        # rebinding also reads: every page and JSON endpoint refuses a Host it does not know
        for path in ["/", "/0/data/queues.json", f"/0/data/job/{dead}.json", "/0/data/workers.json"]:
            attempts += [("GET", path, rebound), ("GET", path, {"Host": "localhost.evil.example"})]
            attempts += [("GET", path, {"Host": ""})]
        answers = [(m, p, h, dash.request(p, method=m, headers=h).status) for m, p, h in attempts]
        refused = {"PUT": 405}  # the actions' routes take GET (refused by the guard) and POST only
        assert [a for a in answers if a[3] != refused.get(a[0], 403)] == []
        assert snapshot(redis) == before, "a refused request changed Redis"

        # the dashboard's own page does the same with its token: these work
        assert dash.action(f"/job/{dead}/requeue").status == 200
        assert redis.lrange("rq:queue:q.dlq", 0, -1) == [other.encode()]
        assert dash.action(f"/job/{queued}/delete").status == 409  # not a dead letter: the workers' job
        assert redis.exists(KEYS.job(queued))
        assert dash.action(f"/job/{other}/delete").status == 200
        assert (redis.llen("rq:queue:q.dlq"), redis.exists(KEYS.job(other))) == (0, 0)
    assert f"dead letter {dead} requeued by 127.0.0.1" in dash.output()
    assert "Traceback" not in dash.output(), dash.output()


def test_basic_auth_guards_pages_and_actions(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    (dead,) = dead_letters(redis, redis_url, 1)
    creds = ("ops", "s3cret-and-long")
    with running_dashboard(
        redis_url, tmp_path / "dashboard.log", username=creds[0], password=creds[1]
    ) as dash:
        dash.wait_ready()
        before = snapshot(redis)
        for auth in [
            None,
            ("ops", "wrong"),
            ("OPS", creds[1]),
            ("", creds[1]),
            ("ops", ""),
            ("ops", creds[1] + "x"),
        ]:
            assert dash.request("/0/data/queues.json", auth=auth).status == 401
            assert dash.request(f"/job/{dead}/requeue", method="POST", auth=auth).status == 401
        assert dash.request("/", headers={"Authorization": "Bearer s3cret-and-long"}).status == 401
        assert snapshot(redis) == before
        assert dash.request("/0/data/queues.json", auth=creds).status == 200
        assert dash.action(f"/job/{dead}/requeue", auth=creds).status == 200
    assert f"dead letter {dead} requeued by ops from 127.0.0.1" in dash.output()


def start(redis_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``chumon dashboard`` that is expected to refuse to start (it would otherwise serve)."""
    environment = {k: v for k, v in env_for(redis_url).items() if not k.startswith("CHUMON_DASHBOARD__")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "chumon", "dashboard", "--port", str(free_port()), *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        ([], {"CHUMON_DASHBOARD__PASSWORD": "s3cret"}, ["CHUMON_DASHBOARD__USERNAME"]),
        ([], {"CHUMON_DASHBOARD__USERNAME": "ops"}, ["CHUMON_DASHBOARD__PASSWORD"]),
        ([], {"CHUMON_DASHBOARD__USERNAME": "ops", "CHUMON_DASHBOARD__PASSWORD": ""}, ["__PASSWORD"]),
        ([], {"CHUMON_DASHBOARD__HOST": "0.0.0.0"}, ["CHUMON_DASHBOARD__HOST", "CHUMON_DASHBOARD__USERNAME"]),
        (["--host", "0.0.0.0"], {}, ["--host", "CHUMON_DASHBOARD__PASSWORD"]),
        (["--host", "::"], {}, ["--host", "CHUMON_DASHBOARD__USERNAME"]),
        (["--host", "dashboard.example"], {}, ["--host"]),
        ([], {"CHUMON_DASHBOARD__HOST": "0.0.0.0", "CHUMON_DASHBOARD__PASSWORD": "s3cret"}, ["__USERNAME"]),
    ],
)
def test_settings_that_would_fail_open_refuse_to_start(
    redis_url: str, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    done = start(redis_url, *args, **env)
    assert done.returncode == 2, done  # a setting or flag to fix: a usage error
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr  # one line
    assert done.stderr.startswith("chumon: dashboard: refusing to start: ")
    assert all(name in done.stderr for name in names), done.stderr
    assert "s3cret" not in done.stderr


def test_startup_line_and_redis_errors_never_show_the_redis_password(redis_url: str, tmp_path: Path) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    secret_url = f"redis://chumon:hunter2-secret@127.0.0.1:{port}/0"  # the test Redis has no such user
    dash = Dashboard(secret_url, tmp_path / "dashboard.log")
    dash.start()
    try:
        wait_until(lambda: "dashboard on http://" in dash.output(), timeout=30, message="the startup line")
        reply = dash.request("/0/data/queues.json")
        assert reply.status == 503 and b"redis://chumon:***@127.0.0.1" in reply.body, reply
    finally:
        dash.stop()
    output = dash.output()
    assert f"for Redis at redis://chumon:***@127.0.0.1:{port}/0" in output, output
    assert "hunter2" not in output and b"hunter2" not in reply.body
    assert "Traceback" not in output, output
