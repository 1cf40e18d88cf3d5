"""Metrics parsed with prometheus-client's own parser after a known workload; logs masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from chumon.exporter import registry as exporter_registry
from chumon.logs import JsonFormatter, TextFormatter, mask
from orders.metrics import process_saga_metrics
from tests.apps import sample
from tests.flow import running_flow
from tests.support import run_burst, wait_until, worker_thread
from workers import Control, EnqueueOptions, Enqueuer, RuntimeSettings, load_job
from workers.keys import Keys
from workers.metrics import RuntimeMetrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parsed = text_string_to_metric_families(generate_latest(registry).decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in parsed for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_metrics_after_a_known_workload(redis: Redis, settings: RuntimeSettings) -> None:
    reg = CollectorRegistry()
    enqueuer = Enqueuer(redis, settings)
    enqueuer.enqueue_many(sample.echo, [{"text": str(i)} for i in range(3)])
    enqueuer.enqueue(sample.permanent, {"text": "no"})
    flaky = enqueuer.enqueue(sample.flaky, {"name": "m", "failures": 2})
    enqueuer.enqueue_many(sample.keyed, [{"key": "same"}])
    with worker_thread(redis, sample.registry, settings, metrics=RuntimeMetrics(reg)):
        wait_until(lambda: load_job(redis, Keys(), flaky).status == "finished", message="the flaky job")
    reg2 = CollectorRegistry()
    second = RuntimeMetrics(reg2)
    run_burst(redis, sample.registry, settings, metrics=second)
    enqueuer.enqueue(sample.keyed, {"key": "same"})  # a duplicate of a done effect
    run_burst(redis, sample.registry, settings, metrics=second)
    found, found2 = samples(reg), samples(reg2)
    assert value(found, "chumon_jobs_total", queue="q", job_type="t.echo", outcome="succeeded") == 3
    assert value(found, "chumon_jobs_total", queue="q", job_type="t.echo", outcome="started") == 3
    assert value(found, "chumon_jobs_total", queue="q", job_type="t.permanent", outcome="dead_lettered") == 1
    assert value(found, "chumon_jobs_total", queue="q", job_type="t.flaky", outcome="retried") == 2
    assert value(found, "chumon_jobs_total", queue="q", job_type="t.flaky", outcome="succeeded") == 1
    assert value(found, "chumon_job_duration_seconds_count", queue="q", job_type="t.echo") == 3
    assert value(found2, "chumon_jobs_total", queue="q", job_type="t.keyed", outcome="duplicate") == 1


def test_exporter_reads_queue_dead_letter_and_worker_state(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    enqueuer.enqueue(sample.permanent, {"text": "dead"})
    run_burst(redis, sample.registry, settings)
    enqueuer.enqueue_many(sample.echo, [{"text": "a"}, {"text": "b"}])
    enqueuer.enqueue(sample.echo, {"text": "later"}, options=EnqueueOptions(delay=600))
    found = samples(exporter_registry(redis, settings.model_copy(update={"dlq_alert_threshold": 0})))
    assert value(found, "chumon_queue_depth", queue="q") == 2
    assert value(found, "chumon_queue_scheduled", queue="q") == 1
    assert value(found, "chumon_queue_oldest_age_seconds", queue="q") >= 0
    assert value(found, "chumon_dead_letters", queue="q") == 1
    assert value(found, "chumon_dead_letter_alert", queue="q") == 1
    assert value(found, "chumon_workers_alive") == 0
    assert value(found, "chumon_projector_lag_events") == 0
    assert value(found, "chumon_queue_paused", queue="q") == 0


def test_exporter_shows_paused_prioritized_and_throttled_queues(
    redis: Redis, settings: RuntimeSettings
) -> None:
    Enqueuer(redis, settings).enqueue(sample.echo, {"text": "p"}, options=EnqueueOptions(priority=4))
    Enqueuer(redis, settings).enqueue(sample.echo, {"text": "plain"})
    Control(redis, settings).pause("q")
    redis.set(Keys().throttle("queue", "q"), 1, px=30_000)
    found = samples(exporter_registry(redis, settings))
    assert value(found, "chumon_queue_paused", queue="q") == 1
    assert value(found, "chumon_queue_prioritized", queue="q") == 1
    assert value(found, "chumon_queue_depth", queue="q") == 2  # the prioritized job waits too
    assert 0 < value(found, "chumon_queue_throttled_seconds", queue="q") <= 30
    redis.set(Keys().paused, "garbage")  # the wrong type: reads as not paused, the scrape goes on
    found = samples(exporter_registry(redis, settings))
    assert value(found, "chumon_queue_paused", queue="q") == 0


def test_saga_outcomes_and_projector_lag(redis: Redis, redis_url: str) -> None:
    before = samples_of_default()
    with running_flow(redis, redis_url) as flow:
        confirmed = flow.place(("TEA", 1))
        declined = flow.place(("TEA", 1), payment_token="tok_declined")
        flow.settled(confirmed), flow.settled(declined)
        wait_until(lambda: flow.producer.get_order_summary(declined) is not None, message="projection")
        state = samples(exporter_registry(redis, flow.settings))
    after = samples_of_default()

    def delta(**labels: str) -> float:
        name = "chumon_saga_outcomes_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(outcome="confirmed", reason="") == 1
    assert delta(outcome="cancelled", reason="payment declined") == 1
    assert (
        value(state, "chumon_orders", status="CONFIRMED") + value(state, "chumon_orders", status="CANCELLED")
        >= 1
    )


def samples_of_default() -> dict:
    process_saga_metrics()
    from prometheus_client import REGISTRY

    return samples(REGISTRY)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old)


def test_job_state_lines_as_json_without_emails_or_tokens(
    redis: Redis, redis_url: str, captured: io.StringIO
) -> None:
    with running_flow(redis, redis_url) as flow:
        order_id = flow.place(
            ("TEA", 1), customer_email="bounce-grace@example.com", payment_token="tok_transient_1"
        )
        flow.settled(order_id)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    jobs = [line for line in lines if line["logger"] == "chumon.jobs"]
    events = {(line["job_type"], line["event"]) for line in jobs if line.get("order_id") == order_id}
    assert {
        ("payments.charge", "started"),
        ("payments.charge", "retried"),
        ("payments.charge", "succeeded"),
    } <= events
    assert ("notifications.confirmation", "dead_lettered") in events
    assert all({"job_id", "queue", "attempt"} <= line.keys() for line in jobs)
    text = captured.getvalue()
    assert "bounce-grace@example.com" not in text and "b***@example.com" in text
    assert "tok_transient_1" not in text


def test_masking_covers_text_lines_and_tracebacks() -> None:
    assert (
        mask("mail to ada.lovelace@example.co.uk with tok_visa_4242")
        == "mail to a***@example.co.uk with tok_***"
    )
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "refused %s", ("ada@example.com",), None)
    try:
        raise RuntimeError("card tok_declined for ada@example.com")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    out = TextFormatter().format(record)
    assert "ada@example.com" not in out and "tok_declined" not in out and "a***@example.com" in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_batched_job_lines_are_formatted_masked_and_written_at_once(fmt: str) -> None:
    from chumon.logs import BatchedJobLines
    from workers.joblog import JobLog, set_sink

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    writes = []
    original = stream.write
    stream.write = lambda text: writes.append(text) or original(text)  # type: ignore[method-assign]
    set_sink(BatchedJobLines(handler, fmt))
    jobs_logger = logging.getLogger("chumon.jobs")
    jobs_logger.setLevel(logging.INFO)
    try:
        joblog = JobLog()
        for attempt in (1, 2):
            joblog.record(
                "retried", job_id="j1", queue="notifications", job_type="notifications.confirmation",
                attempt=attempt, context={"order_id": "o1"}, detail="451 for ada@example.com, card tok_visa",
            )  # fmt: skip
        joblog.flush()
    finally:
        set_sink(None)
        jobs_logger.setLevel(logging.NOTSET)
    assert len(writes) == 1
    lines = stream.getvalue().splitlines()
    assert (
        len(lines) == 2 and "ada@example.com" not in stream.getvalue() and "tok_visa" not in stream.getvalue()
    )
    if fmt == "json":
        first = json.loads(lines[0])
        assert (first["event"], first["order_id"], first["attempt"], first["logger"]) == (
            "retried",
            "o1",
            1,
            "chumon.jobs",
        )
    else:
        expected = "retried notifications.confirmation j1 queue=notifications attempt=2 order_id=o1"
        assert f"INFO chumon.jobs: {expected}" in lines[1]


def test_a_log_that_cannot_be_written_never_stops_a_worker(redis: Redis, settings: RuntimeSettings) -> None:
    from workers.joblog import set_sink

    def broken(lines: list) -> None:
        raise ValueError("I/O operation on closed file.")

    set_sink(broken)
    jobs_logger = logging.getLogger("chumon.jobs")
    jobs_logger.setLevel(logging.INFO)
    try:
        Enqueuer(redis, settings).enqueue_many(sample.echo, [{"text": "a"}, {"text": "b"}])
        assert run_burst(redis, sample.registry, settings).stats["done"] == 2
    finally:
        set_sink(None)
        jobs_logger.setLevel(logging.NOTSET)
