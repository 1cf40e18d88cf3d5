"""Stored XSS, tried in headless Chromium: markup in every field a job, a worker or a queue has.

Real jobs carry the payloads where the product puts them (a payload, its description, an
exception's message and traceback, a result); raw writes put them where only someone with
Redis access could (a job id, a queue name, meta, status, origin, dates, a worker's name and
versions). Each page that shows them is opened; the test fails if a dialog was asked for, if
any injected element (they all carry ``data-xss``), ``javascript:`` URL or script exists in the
DOM, or if a template delimiter was evaluated (7*823543 = 5764801 on the page). It also
checks the payloads are shown, as text: an empty page would pass the rest.

At 1280 px, a dead letter with a very long description and traceback keeps its Requeue and
Delete buttons inside the window.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis import Redis

from tests.apps import sample
from tests.dashboard_support import CHROMIUM, KEYS, Network, chromium, running_dashboard
from tests.support import make_settings, run_burst
from workers import Enqueuer, load_job

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no {CHROMIUM}: .ci/install-test-tools installs Debian's"
    ),
]

EVALUATED = "5764801"  # 7 * 823543: on the page only if a template evaluated a delimiter
PAYLOADS = [
    '<script>alert("XSS-1")</script>',
    '<img src=x data-xss onerror=alert("XSS-2")>',
    '"><svg data-xss onload=alert("XSS-3")>',
    "'><a data-xss href=javascript:alert('XSS-4')>x</a>",
    'javascript:alert("XSS-5")',
    '<%= alert("XSS-6") %><%- 7*823543 %><% alert("XSS-7") %><%=7*823543%>',
    "{{ 7*823543 }}{% if 1 %}{{ config }}{% endif %}",
    '</script><script>alert("XSS-8")</script>',
    "<iframe data-xss srcdoc=\"<script>parent.alert('XSS-9')</script>\"></iframe>",
    '${alert("XSS-10")}`',
    '<details data-xss open ontoggle=alert("XSS-11")>',
    "</textarea></pre></title><img src=x data-xss onerror=alert('XSS-12')>",
]
ALL = " ".join(PAYLOADS)
# a queue name must survive being a URL path segment (no '/'), so it gets a payload of its own
QUEUE = "<img src=x data-xss onerror=alert('XSS-Q')>\"'{{7*823543}}<%=7*823543%>\\"  # and a backslash
VISIBLE = "<img src=x data-xss onerror=alert("  # shown as text wherever ALL is (JSON escapes its quotes)

RECORD_DIALOGS = """
    window.__dialogs = [];
    for (const name of ['alert', 'confirm', 'prompt', 'print']) {
        window[name] = function (message) { window.__dialogs.push(name + ': ' + message); };
    }
"""
INSPECT = """
    const injected = document.querySelectorAll('[data-xss]').length;
    // the page's own scripts: files of the dashboard, its templates, its one inline block (with the nonce)
    const scripts = Array.from(document.scripts).filter(
        s => !s.src && s.type !== 'text/template' && !s.nonce).length;
    const urls = [];
    for (const element of document.querySelectorAll('*')) {
        for (const attribute of element.attributes) {
            if (/^\\s*javascript:/i.test(attribute.value)) urls.push(element.tagName + ' ' + attribute.name);
        }
    }
    return {injected: injected, scripts: scripts, urls: urls, dialogs: window.__dialogs || [],
            text: document.body.innerText};
"""
BUTTONS_IN_VIEW = """
    const width = document.documentElement.clientWidth;
    const buttons = Array.from(document.querySelectorAll(
        'table#jobs [data-role=requeue-job-btn], table#jobs [data-role=delete-job-btn]'));
    return {width: width, page: document.documentElement.scrollWidth, count: buttons.length,
            outside: buttons.filter(b => b.getBoundingClientRect().right > width).length};
"""


def exc_string(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode())).decode()


def plant(redis: Redis) -> dict[str, str]:
    """What only someone with Redis access could write: payloads in ids, names and raw fields."""
    now = "2026-12-02T10:00:00.000000Z"
    data = json.dumps(["t.echo", None, [{"text": ALL, ALL: ALL}], {}])
    redis.sadd(KEYS.RQ_QUEUES, KEYS.queue(QUEUE))
    redis.hset(
        KEYS.job(ALL),
        mapping={
            "description": ALL,
            "origin": QUEUE,
            "status": ALL,
            "created_at": ALL,  # garbled dates too
            "enqueued_at": now,
            "ended_at": ALL,
            "data": data,
            "meta": json.dumps({ALL: ALL, "failures": [{"message": ALL, "traceback": ALL}]}),
            "worker_name": ALL,
            "attempt": ALL,
            "progress": json.dumps({ALL: ALL}),
        },
    )
    redis.rpush(KEYS.job_logs(ALL), *PAYLOADS)
    redis.xadd(KEYS.results(ALL), {"type": "2", "exc_string": exc_string(ALL), "created_at": now})
    result_id = "xss-result"
    redis.hset(
        KEYS.job(result_id),
        mapping={"description": ALL, "origin": QUEUE, "status": "finished", "created_at": now, "data": data},
    )
    value = base64.b64encode(json.dumps({ALL: ALL}).encode()).decode()
    redis.xadd(KEYS.results(result_id), {"type": "1", "return_value": value, "created_at": now})
    redis.rpush(KEYS.queue(QUEUE), ALL, result_id)
    redis.zadd(f"rq:failed:{QUEUE}", {ALL: 1})
    worker = KEYS.rq_worker(ALL)
    redis.sadd(KEYS.RQ_WORKERS, worker)
    redis.hset(
        worker,
        mapping={
            "state": "busy",
            "queues": f"{QUEUE},q",
            "current_job": ALL,
            "pid": "1",
            "version": ALL,
            "python_version": ALL,
            "birth": now,
            "last_heartbeat": now,
        },
    )
    # a dead letter whose description and traceback have no place to break a line
    long_id = "long-dead-letter"
    redis.hset(
        KEYS.job(long_id),
        mapping={
            "description": "t.permanent(" + "x" * 4000 + ")",
            "origin": "q",
            "status": "failed",
            "created_at": now,
            "ended_at": now,
            "dead_lettered_at": now,
            "data": json.dumps(["t.permanent", None, [{"text": "y" * 4000}], {}]),
        },
    )
    redis.xadd(KEYS.results(long_id), {"type": "2", "exc_string": exc_string("Z" * 5000), "created_at": now})
    redis.rpush("rq:queue:q.dlq", long_id)
    redis.zadd("rq:failed:q", {long_id: 1})
    return {"result": result_id, "long": long_id}


def run_real_jobs(redis: Redis, redis_url: str) -> dict[str, str]:
    """A finished job whose payload and result hold the payloads, and a dead letter whose
    exception message and traceback hold them."""
    settings = make_settings(redis_url)
    enqueuer = Enqueuer(redis, settings)
    echo = enqueuer.enqueue(sample.echo, {"text": ALL})
    dead = enqueuer.enqueue(sample.permanent, {"text": ALL})
    run_burst(redis, sample.registry, settings, queues=["q"])
    assert (load_job(redis, KEYS, echo) or pytest.fail("echo gone")).status == "finished"
    assert (load_job(redis, KEYS, dead) or pytest.fail("dead gone")).status == "failed"
    return {"echo": echo, "dead": dead}


def test_no_value_from_redis_runs_as_markup_on_any_page(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    real = run_real_jobs(redis, redis_url)
    planted = plant(redis)
    with (
        running_dashboard(redis_url, tmp_path / "dashboard.log") as dash,
        chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver,
    ):
        dash.wait_ready()
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_DIALOGS})
        network = Network(driver, dash.url)
        base = dash.url

        def visit(path: str, rendered: str, shows: str = VISIBLE) -> None:
            driver.get(base + path)
            network.wait_until(
                lambda: driver.execute_script(
                    "return document.querySelector(arguments[0]) !== null", rendered
                ),
                f"{path} to render its data",
            )
            seen: dict[str, Any] = driver.execute_script(INSPECT)
            network.collect()
            where = f"on {path}"
            assert seen["dialogs"] == [], f"a dialog was asked for {where}: {seen['dialogs']}"
            assert seen["injected"] == 0, f"injected elements in the DOM {where}"
            assert seen["scripts"] == 0, f"an injected script in the DOM {where}"
            assert seen["urls"] == [], f"javascript: URLs in the DOM {where}: {seen['urls']}"
            assert EVALUATED not in seen["text"], f"a template delimiter was evaluated {where}"
            assert shows in seen["text"], f"the payloads are not shown as text {where}"

        queue = quote(QUEUE, safe="")
        jobs = "table#jobs tr[data-role=job]"
        visit("/0/view/queues", "table#queues tr[data-role=queue]", shows=QUEUE)
        visit(f"/0/view/jobs/{queue}/queued/8/asc/1", jobs)
        visit(f"/0/view/jobs/{queue}/failed/8/asc/1", jobs)
        visit("/0/view/jobs/q/finished/8/asc/1", jobs)
        visit("/0/view/jobs/q/failed/8/asc/1", jobs)
        visit("/0/view/workers", "table#workers tr[data-role=worker]")
        for job_id in (ALL, planted["result"], real["echo"], real["dead"]):
            visit(f"/0/view/job/{quote(job_id, safe='')}", "#job-data > span")
        # a job's progress and log lines (ctx.progress, ctx.log) are shown, as text
        visit(f"/0/view/job/{quote(ALL, safe='')}", "pre.job-log", shows=f"Log (last {len(PAYLOADS)} lines)")
        # the jobs list's own markup still works around the payloads: a dead letter's buttons
        visit("/0/view/jobs/q.dlq/queued/8/asc/1", jobs)
        layout = driver.execute_script(BUTTONS_IN_VIEW)
        assert layout["count"] == 4, layout  # Requeue and Delete for each of the two dead letters
        assert layout["outside"] == 0 and layout["page"] <= layout["width"] <= 1280, layout

    assert network.failures == []
    assert [(url, status) for url, status in network.responses if status >= 400] == []
    assert network.console == [], network.console
    assert "Traceback" not in dash.output(), dash.output()
