"""Enqueue validation and layout, on fakeredis (unit tier: no server needed)."""

import math
import time
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from pydantic import ValidationError

from tests.apps import sample
from workers import EnqueueOptions, Enqueuer, RetryPolicy, RuntimeSettings
from workers.codec import decode_data


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def enqueuer(fake: fakeredis.FakeRedis) -> Enqueuer:
    return Enqueuer(fake, RuntimeSettings(redis_url="redis://unused"))


def snapshot(r: fakeredis.FakeRedis) -> dict:
    return {key: r.dump(key) for key in r.keys("*")}


def test_invalid_payload_names_the_field_and_writes_nothing(fake, enqueuer) -> None:
    before = snapshot(fake)
    with pytest.raises(ValidationError) as err:
        enqueuer.enqueue(sample.echo, {"text": "", "n": "many"})
    text = str(err.value)
    assert "text" in text and "n\n" in text
    assert snapshot(fake) == before


def test_bulk_with_one_invalid_payload_writes_nothing(fake, enqueuer) -> None:
    with pytest.raises(ValidationError, match="text"):
        enqueuer.enqueue_many(sample.echo, [{"text": "ok"}, {"text": ""}])
    assert fake.dbsize() == 0


def test_invalid_options_are_refused_before_io(fake) -> None:
    with pytest.raises(ValidationError, match="queue name"):
        EnqueueOptions(queue="bad name")
    with pytest.raises(ValidationError, match="delay or run_at"):
        EnqueueOptions(delay=1, run_at=datetime.now(UTC))
    with pytest.raises(ValidationError, match="timezone"):
        EnqueueOptions(run_at=datetime.now())
    with pytest.raises(ValidationError, match="extra"):
        EnqueueOptions(text="a payload field is not an option")  # type: ignore[call-arg]


def test_wrong_payload_model_is_a_type_error(enqueuer) -> None:
    with pytest.raises(TypeError, match="Echo"):
        enqueuer.enqueue(sample.echo, sample.Gate(name="x"))


def test_job_is_an_rq_job_hash_on_an_rq_queue(fake, enqueuer) -> None:
    job_id = enqueuer.enqueue(sample.echo, sample.Echo(text="hi"))
    fields = {k.decode(): v.decode() for k, v in fake.hgetall(f"rq:job:{job_id}").items()}
    assert fields["status"] == "queued" and fields["origin"] == "q"
    assert decode_data(fields["data"].encode()) == ("t.echo", {"text": "hi", "n": 0})
    assert fake.lrange("rq:queue:q", 0, -1) == [job_id.encode()]
    assert fake.smembers("rq:queues") == {b"rq:queue:q"}


def test_delay_schedules_and_options_are_kept_apart(fake, enqueuer) -> None:
    options = EnqueueOptions(delay=30, retry=RetryPolicy(max_attempts=9), timeout=2.5, queue="other")
    before = time.time()
    job_id = enqueuer.enqueue(sample.echo, {"text": "later"}, options=options)
    due = fake.zscore("rq:scheduled:other", job_id)
    assert before + 30 - 1 <= due <= time.time() + 30 + 1  # the server's clock (here: fakeredis's)
    assert fake.llen("rq:queue:other") == 0
    fields = fake.hgetall(f"rq:job:{job_id}")
    assert fields[b"status"] == b"scheduled" and fields[b"timeout"] == b"3"
    assert b'"max_attempts":9' in fields[b"retry"]
    assert decode_data(fields[b"data"])[1] == {"text": "later", "n": 0}  # no option leaked in


def test_run_at_in_the_past_means_now(fake, enqueuer) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    job_id = enqueuer.enqueue(sample.echo, {"text": "x"}, options=EnqueueOptions(run_at=past))
    assert fake.lrange("rq:queue:q", 0, -1) == [job_id.encode()]


def test_producer_idempotency_key_returns_the_first_job(fake, enqueuer) -> None:
    options = EnqueueOptions(idempotency_key="order-7")
    first = enqueuer.enqueue(sample.echo, {"text": "a"}, options=options)
    second = enqueuer.enqueue(sample.echo, {"text": "b"}, options=options)
    assert first == second
    assert fake.llen("rq:queue:q") == 1


def test_bulk_enqueue_is_chunked_in_one_round_trip(fake, enqueuer, monkeypatch) -> None:
    calls, trips = [], []
    original_run, original_execute = enqueuer.scripts.run, type(fake.pipeline()).execute
    monkeypatch.setattr(
        enqueuer.scripts, "run", lambda *a, **k: calls.append(len(a[1]["jobs"])) or original_run(*a, **k)
    )
    monkeypatch.setattr(
        type(fake.pipeline()),
        "execute",
        lambda self, *a, **k: trips.append(1) or original_execute(self, *a, **k),
    )
    ids = enqueuer.enqueue_many(sample.echo, [{"text": str(i)} for i in range(1200)])
    assert calls == [200] * 6 and len(trips) == 1  # three bounded script calls, one round trip
    assert len(set(ids)) == 1200 and fake.llen("rq:queue:q") == 1200
    assert [i.decode() for i in fake.lrange("rq:queue:q", 0, -1)] == ids  # in order


def test_an_atomic_bulk_enqueue_is_bounded(fake, enqueuer) -> None:
    with fake.pipeline(transaction=True) as pipe, pytest.raises(ValueError, match="at most 1000"):
        enqueuer.enqueue_many(sample.echo, [{"text": str(i)} for i in range(1001)], pipeline=pipe)
    assert fake.dbsize() == 0


@pytest.mark.parametrize(
    "options",
    [
        {"delay": math.inf},
        {"delay": math.nan},
        {"delay": 366 * 86400},
        {"timeout": math.inf},
        {"timeout": 8 * 86400},
        {"result_ttl": 10**20},
        {"result_ttl": -2},
        {"run_at": datetime.now(UTC) + timedelta(days=400)},
        {"idempotency_key": "two\nlines"},
        {"idempotency_key": ""},
        {"retry": {"factor": 1e200}},
        {"retry": {"base": math.inf}},
        {"retry": {"max_attempts": 10**6}},
    ],
)
def test_options_at_their_limits_are_refused_when_made(options) -> None:
    with pytest.raises(ValidationError):
        EnqueueOptions.model_validate(options)


@pytest.mark.parametrize("job_id", ["a.b", "a:b", "a b", "x\ny", "", "é", "a" * 129, "{tag}"])
def test_job_ids_every_tool_accepts(fake, enqueuer, job_id) -> None:
    with pytest.raises(ValueError, match="job id"):
        enqueuer.spec(sample.echo, {"text": "x"}, EnqueueOptions(), job_id=job_id)
    assert enqueuer.spec(sample.echo, {"text": "x"}, EnqueueOptions(), job_id="order-1_timeout")["id"]


def test_enqueue_joins_the_callers_transaction(fake, enqueuer) -> None:
    with fake.pipeline(transaction=True) as pipe:
        pipe.set("state", "changed")
        enqueuer.enqueue(sample.echo, {"text": "follow-up"}, pipeline=pipe)
        assert fake.llen("rq:queue:q") == 0  # nothing visible before EXEC
        pipe.execute()
    assert fake.get("state") == b"changed" and fake.llen("rq:queue:q") == 1
