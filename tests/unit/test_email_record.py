"""orders.handlers._record_sent: an email already out is recorded patiently, never resent early."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import OutOfMemoryError, ResponseError

import jobs.orders
from orders import commands as c
from orders import handlers as h


class Orders:
    """Answers email_sent with the given errors, then success; records each call's `loaded`."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[Any] = []

    def email_sent(self, order_id: str, kind: str, message_id: str, cause: str, *, loaded: Any) -> None:
        self.calls.append(loaded)
        if self.errors:
            raise self.errors.pop(0)


CMD = c.SendConfirmationEmail(order_id="ord-1", correlation_id="corr-1", at=0.0)


def test_a_refused_record_is_tried_again_on_a_fresh_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h.time, "sleep", lambda s: None)
    busy = ResponseError(
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."
    )
    in_script = ResponseError(  # Redis 6.2: a script's first write refused
        "Error running script (call to f_33a0): @user_script:390: -OOM command not allowed when used memory"
    )
    orders = Orders(OutOfMemoryError("full"), busy, in_script)
    loaded = object()
    h._record_sent(orders, CMD, "confirmation", "<m@x>", loaded)  # type: ignore[arg-type]
    assert orders.calls == [loaded, None, None, None]  # the read it decided on is used once only


def test_patience_runs_out_and_the_error_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(h.time, "sleep", sleep)
    monkeypatch.setattr(h.time, "monotonic", lambda: clock[0])
    orders = Orders(*[OutOfMemoryError("full")] * 1000)
    with pytest.raises(OutOfMemoryError):
        h._record_sent(orders, CMD, "confirmation", "<m@x>", object())  # type: ignore[arg-type]
    assert sum(slept) <= h.RECORD_PATIENCE and max(slept) == 1.0 and slept[0] == 0.05


def test_an_error_that_waiting_cannot_mend_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h.time, "sleep", lambda s: pytest.fail("waited"))
    orders = Orders(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    with pytest.raises(ResponseError):
        h._record_sent(orders, CMD, "confirmation", "<m@x>", object())  # type: ignore[arg-type]
    assert len(orders.calls) == 1


def test_patience_ends_well_inside_the_email_jobs_time_out() -> None:
    for job_type in (jobs.orders.confirmation, jobs.orders.cancellation):
        assert job_type.timeout >= h.RECORD_PATIENCE + 5
