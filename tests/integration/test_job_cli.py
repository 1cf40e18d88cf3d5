"""`chumon job show` with progress and logs, `chumon job events`: in-process, against the test Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis import Redis

from chumon import cli
from tests.apps import reporting
from tests.support import make_settings, run_burst
from workers import Enqueuer


@pytest.fixture(autouse=True)
def environment(cli_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUMON_JOB_EVENTS", "1")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and code == 0 else out
    return code, data, err


def test_job_show_prints_progress_and_log(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url, job_events=True)
    job_id = Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 2})
    run_burst(redis, reporting.registry, settings)
    code, shown, _ = run(capsys, "job", "show", job_id, "--json")
    assert code == 0 and shown["progress"] == {"step": 2, "of": 2} and shown["logs"] == ["step 1", "step 2"]
    code, text, _ = run(capsys, "job", "show", job_id)
    assert code == 0 and "log (last 2 lines):" in text and "    step 2" in text


def test_job_events_lists_resumes_and_filters(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url, job_events=True)
    first = Enqueuer(redis, settings).enqueue(reporting.keep3, {"n": 1})
    run_burst(redis, reporting.registry, settings)
    code, events, _ = run(capsys, "job", "events", "--json")
    assert code == 0 and [e["event"] for e in events] == ["queued", "active", "completed"]
    second = Enqueuer(redis, settings).enqueue(reporting.keep3, {"n": 2})
    code, later, _ = run(capsys, "job", "events", "--from", events[-1]["id"], "--json")
    assert code == 0 and [(e["event"], e["job_id"]) for e in later] == [("queued", second)]
    code, only, _ = run(capsys, "job", "events", "--job", first, "--json")
    assert code == 0 and {e["job_id"] for e in only} == {first}
    code, text, _ = run(capsys, "job", "events")
    assert code == 0 and f"queued        {second}  queue=rq1" in text


def test_job_events_refuses_a_bad_id(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "job", "events", "--from", "yesterday")
    assert code == 2 and "--from" in err and "Traceback" not in err
