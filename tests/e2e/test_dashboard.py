"""rq-dashboard as ``chumon dashboard`` serves it, against real workers and chumon's JSON jobs.

The state: a dead letter on ``q.dlq`` (and in ``q``'s failed registry), a retry scheduled
ten minutes ahead, three finished jobs, a worker busy on a long job and an idle worker.
The first test reads the dashboard's JSON endpoints; the second drives its pages in
headless Chromium, as an operator would, and finds no error response.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.dashboard_support import (
    CHROMIUM,
    KEYS,
    Dashboard,
    Network,
    State,
    chromium,
    dashboard_state,
    listening_addresses,
    running_dashboard,
    table,
    text_of,
)
from tests.support import wait_until
from workers import Control, RuntimeSettings

pytestmark = pytest.mark.e2e


def ids(listing: dict[str, Any]) -> list[str]:
    return [job["id"] for job in listing["jobs"]]


class Unpickled:
    """Pickles to a call that creates ``marker``: proof, if it exists, that someone unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_json_endpoints_show_every_state_and_never_fail(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    with (
        running_dashboard(redis_url, tmp_path / "dashboard.log") as dash,
        running_dashboard(redis_url, tmp_path / "locked.log", username="ops", password="s3cret") as locked,
        dashboard_state(redis, redis_url) as state,
    ):
        dash.wait_ready()
        locked.wait_ready()

        queues = {q["name"]: q for q in dash.get_json("/0/data/queues.json")["queues"]}
        assert {"q", "q.dlq", "hooks"} <= set(queues)
        counts = ["count", "failed_job_registry_count", "scheduled_job_registry_count"]
        counts += ["started_job_registry_count", "finished_job_registry_count"]
        assert [queues["q"][c] for c in counts] == [0, 1, 1, 1, 3]
        assert [queues["q.dlq"][c] for c in counts] == [1, 0, 0, 0, 0]
        assert queues["hooks"]["count"] == 1
        assert (queues["hooks"]["paused"], queues["hooks"]["prioritized"]) == (False, 0)
        Control(redis, RuntimeSettings(redis_url=redis_url)).pause("hooks")
        hooks = {q["name"]: q for q in dash.get_json("/0/data/queues.json")["queues"]}["hooks"]
        assert hooks["paused"] is True

        failed = dash.get_json("/0/data/jobs/q/failed/8/asc/1.json")
        assert ids(failed) == [state.dead]
        assert "Permanent: order-7 is refused" in failed["jobs"][0]["exc_info"]
        assert ids(dash.get_json("/0/data/jobs/q.dlq/queued/8/asc/1.json")) == [state.dead]
        assert ids(dash.get_json("/0/data/jobs/q/scheduled/8/asc/1.json")) == [state.gated]
        assert ids(dash.get_json("/0/data/jobs/q/started/8/asc/1.json")) == [state.nap]
        assert sorted(ids(dash.get_json("/0/data/jobs/q/finished/8/asc/1.json"))) == sorted(state.echoes)
        assert ids(dash.get_json("/0/data/jobs/hooks/queued/8/asc/1.json")) == [state.hook]

        dead = dash.get_json(f"/0/data/job/{state.dead}.json")
        assert (dead["status"], dead["origin"], dead["description"][:11]) == ("failed", "q", "t.permanent")
        assert dead["exc_info"].startswith("--- attempt 1 ") and "Traceback (most" in dead["exc_info"]
        meta = json.loads(dead["metadata"])
        assert (meta["attempt"], meta["state"]) == (1, "dead-lettered")
        assert meta["dead_letter_reason"] == "permanent error"
        assert [(f["attempt"], f["exc_type"]) for f in meta["failures"]] == [(1, "Permanent")]
        assert "order-7 is refused" in meta["failures"][0]["traceback"]

        gated = dash.get_json(f"/0/data/job/{state.gated}.json")
        assert gated["status"] == "scheduled" and "ConnectionError: gate closed" in gated["exc_info"]
        meta = json.loads(gated["metadata"])
        assert (meta["attempt"], meta["max_attempts"], meta["state"]) == (1, 3, "retry scheduled")
        assert meta["next_run_at"] and meta["failures"][0]["exc_type"] == "ConnectionError"

        echo = dash.get_json(f"/0/data/job/{state.echoes[0]}.json")
        assert (echo["status"], echo["exc_info"]) == ("finished", None)
        assert echo["result"] == {"text": "e0", "attempt": 1}

        # the view rq-dashboard 0.9 answers with 500 for JSON jobs: a busy worker, an idle one
        workers = {w["name"]: w for w in dash.get_json("/0/data/workers.json")["workers"]}
        busy = workers["busy"]
        assert (busy["state"], busy["queues"], busy["current_job"]["job_id"]) == ("busy", ["q"], state.nap)
        assert busy["current_job"]["call_string"].startswith("t.sleep(")
        assert (workers["idle"]["state"], workers["idle"]["current_job"]) == ("idle", "idle")

        pages = ["/", "/0/view/jobs/q.dlq/queued/8/asc/1", f"/0/view/job/{state.dead}", "/0/view/workers"]
        for page in pages:
            assert dash.request(page).status == 200, page

        # basic auth when configured; localhost only by default
        assert locked.request("/0/data/queues.json").status == 401
        assert locked.request("/", auth=("ops", "wrong")).status == 401
        assert locked.request("/0/data/workers.json", auth=("ops", "s3cret")).status == 200
        assert locked.get_json("/0/data/queues.json", auth=("ops", "s3cret"))["queues"]
        assert listening_addresses(dash.port) == {"127.0.0.1"}
        assert listening_addresses(locked.port) == {"127.0.0.1"}

        check_never_unpickles(redis, dash, state, tmp_path / "unpickled")
        check_requeue_is_chumons(redis, dash, state)

    assert [(r.path, r.status) for r in dash.responses + locked.responses if r.status >= 500] == []
    assert "Traceback" not in dash.output() + locked.output(), dash.output() + locked.output()


def check_never_unpickles(redis: Redis, dash: Dashboard, state: State, marker: Path) -> None:
    """A pickle planted in a job's meta is not run by opening the job (rq's default would)."""
    redis.hset(KEYS.job(state.echoes[1]), "meta", pickle.dumps(Unpickled(marker)))
    assert dash.request(f"/0/view/job/{state.echoes[1]}").status == 200
    assert dash.request("/0/data/jobs/q/finished/8/asc/1.json").status == 200
    assert not marker.exists(), "the dashboard unpickled a job's meta"


def check_requeue_is_chumons(redis: Redis, dash: Dashboard, state: State) -> None:
    """The Requeue button takes the job off q.dlq with a fresh budget, as ``chumon dlq requeue``."""
    reply = dash.action(f"/job/{state.dead}/requeue")
    assert (reply.status, reply.json()) == (200, {"status": "OK"})

    def meta() -> dict[str, Any]:
        raw = redis.hget(KEYS.job(state.dead), "meta")
        assert isinstance(raw, bytes) and raw.startswith(b"{"), raw  # still JSON, never a pickle
        return dict(json.loads(raw))

    # the busy worker has free slots: the job runs again and, being permanent, is dead-lettered again
    wait_until(lambda: len(meta()["failures"]) == 2, message="the requeued job to fail again")
    assert meta()["requeued_at"] and meta()["state"] == "dead-lettered"
    assert redis.lrange("rq:queue:q.dlq", 0, -1) == [state.dead.encode()]  # once, not twice


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: .ci/install-test-tools installs Debian's")
def test_dashboard_pages_in_headless_chromium(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    with (
        running_dashboard(redis_url, tmp_path / "dashboard.log") as dash,
        dashboard_state(redis, redis_url) as state,
        chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver,
    ):
        dash.wait_ready()
        network = Network(driver, dash.url)
        base = dash.url

        # the queues page: every queue, the dead-letter queue included, with its counts
        driver.get(f"{base}/0/view/queues")
        queues = network.wait_until(
            lambda: (rows := table(driver, "table#queues tr[data-role=queue]")) and "q.dlq" in rows and rows,
            "the queues table",
        )
        # columns: queued, deferred, scheduled, started, finished, failed, canceled
        assert queues["q"][0] == ["0", "0", "1", "1", "3", "1", "0"]
        assert queues["q.dlq"][0] == ["1", "0", "0", "0", "0", "0", "0"]
        assert queues["hooks"][0][0] == "1"
        # the dead-letter queue is marked as such; its origin queue is not
        assert text_of(driver, "tr[data-queue='q.dlq'] td.queue-name .badge") == "dead letters"
        assert text_of(driver, "tr[data-queue='q'] td.queue-name .badge") == ""
        assert "A dead letter is counted twice" in text_of(driver, "p.intro")
        dlq_link = queues["q.dlq"][1][0]  # the link on its count of queued jobs
        network.collect()

        # the dead-letter queue's page, reached by that link: the dead letter with its error
        assert dlq_link == f"{base}/0/view/jobs/q.dlq/queued/8/asc/1", dlq_link
        driver.get(dlq_link)
        row = f"table#jobs tr[data-job-id='{state.dead}']"
        network.wait_until(lambda: "order-7 is refused" in text_of(driver, row), "the dead letter's row")
        intro = text_of(driver, "#jobs-intro")
        assert "holds the dead letters of queue q" in intro and "Failed registry of q" in intro, intro
        jobs = table(driver, "table#jobs tr[data-role=job]")
        assert len(jobs) == 1 and "t.permanent(" in text_of(driver, row)
        job_link = next(iter(jobs.values()))[1][0]
        network.collect()

        # the failed job's page, reached by its link: status, origin, failure history, traceback
        assert job_link == f"{base}/0/view/job/{state.dead}", job_link
        driver.get(job_link)
        network.wait_until(lambda: "order-7 is refused" in text_of(driver, "#job-data"), "the job's details")
        details = text_of(driver, "#job-data")
        assert re.search(r"Status:\s*failed", details) and re.search(r"Origin queue:\s*q\b", details)
        assert '"exc_type": "Permanent"' in details and '"dead_letter_reason": "permanent error"' in details
        assert "Traceback (most recent call last)" in details
        network.collect()

        # the workers page while "busy" runs the nap: its current job, linked; "idle" is idle
        driver.get(f"{base}/0/view/workers")
        workers = network.wait_until(
            lambda: table(driver, "table#workers tr[data-role=worker]"), "the workers table"
        )
        (call, queue), links = workers["busy"]
        assert call.startswith("t.sleep(") and queue == "q"
        assert links == [f"{base}/0/view/job/{state.nap}"]
        assert workers["idle"] == (["idle", "idle"], [])
        assert redis.hget(KEYS.rq_worker("busy"), "current_job") == state.nap.encode()  # still running
        network.collect()

    assert network.failures == []
    assert [(url, status) for url, status in network.responses if status >= 400] == []
    assert network.console == []
    for path in [
        "/0/data/queues.json",
        "/0/data/jobs/q.dlq/queued/8/asc/1.json",
        f"/0/data/job/{state.dead}.json",
        "/0/data/workers.json",
    ]:
        assert 200 in network.status_of(base + path), f"the browser never loaded {path}"
    assert "Traceback" not in dash.output(), dash.output()
