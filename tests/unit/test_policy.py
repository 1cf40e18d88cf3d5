import pytest

from workers.policy import DeadLetter, RetryAt, RetryPolicy, backoff_delay, decide


def test_delays_grow_exponentially_without_jitter() -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, cap=100.0, jitter=0.0)
    assert [backoff_delay(n, policy, lambda: 0.5) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_cap_is_never_exceeded() -> None:
    policy = RetryPolicy(base=1.0, factor=10.0, cap=30.0, jitter=0.0)
    assert backoff_delay(3, policy, lambda: 0.0) == 30.0
    assert backoff_delay(1000, policy, lambda: 0.0) == 30.0  # no overflow far past the cap


@pytest.mark.parametrize("u", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_stays_within_bounds(u: float) -> None:
    policy = RetryPolicy(base=2.0, factor=3.0, cap=1000.0, jitter=0.3)
    for attempt in range(1, 6):
        raw = 2.0 * 3.0 ** (attempt - 1)
        delay = backoff_delay(attempt, policy, lambda: u)
        assert raw * 0.7 <= delay <= raw
        assert delay == pytest.approx(raw * (1 - 0.3 * u))


def test_full_jitter_reaches_zero() -> None:
    policy = RetryPolicy(base=4.0, jitter=1.0)
    assert backoff_delay(1, policy, lambda: 0.999999) == pytest.approx(0.0, abs=1e-5)


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, RetryPolicy(), lambda: 0.0)


def test_policy_rejects_cap_below_base() -> None:
    with pytest.raises(ValueError, match="cap"):
        RetryPolicy(base=10, cap=5)


def test_decide_retries_until_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3, base=1.0, jitter=0.0)
    assert decide(1, policy, retryable=True, requested_delay=None, rand=lambda: 0) == RetryAt(1.0)
    assert decide(2, policy, retryable=True, requested_delay=None, rand=lambda: 0) == RetryAt(2.0)
    assert decide(3, policy, retryable=True, requested_delay=None, rand=lambda: 0) == DeadLetter(
        "attempts exhausted (3 of 3)"
    )


def test_decide_permanent_error_dead_letters_at_once() -> None:
    decision = decide(1, RetryPolicy(max_attempts=9), retryable=False, requested_delay=None, rand=lambda: 0)
    assert decision == DeadLetter("permanent error")


def test_requested_delay_replaces_backoff_not_budget() -> None:
    policy = RetryPolicy(max_attempts=2, base=100.0)
    assert decide(1, policy, retryable=True, requested_delay=0.5, rand=lambda: 0) == RetryAt(0.5)
    assert isinstance(decide(2, policy, retryable=True, requested_delay=0.5, rand=lambda: 0), DeadLetter)
