"""``chumon lab ...``: each lab runs on a real Redis and prints counts that agree with each other."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis import Redis

from chumon import cli


@pytest.fixture(autouse=True)
def environment(cli_environment: None) -> None:
    """Commands run in-process against the suite's Redis (tests/conftest.py)."""


def lab(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["lab", *argv, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_queue_vs_stream(capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str) -> None:
    r = lab(capsys, "queue-vs-stream", "--redis-url", redis_url, "--messages", "60", "--keep", "15")
    n = r["messages"]
    assert r["queue_consumer_a"] + r["queue_consumer_b"] == n and r["queue_seen_by_both"] == 0
    assert r["queue_late_consumer"] == 0
    assert r["stream_group_projector"] == r["stream_group_billing"] == n
    assert r["stream_in_group_consumer_1"] + r["stream_in_group_consumer_2"] == n
    assert r["stream_late_group_replayed"] == n
    assert r["slow_group_read_after_trim"] == r["trim_kept"] == 15
    assert r["slow_group_lost"] == n - r["slow_group_read_before_trim"] - 15 > 0
    assert redis.keys("chumon-lab-*") == []  # a shared Redis keeps nothing of the lab


def test_delivery_counts_lost_and_doubled_effects(
    capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str
) -> None:
    runs = [lab(capsys, "delivery", "--redis-url", redis_url, "--jobs", "150") for _ in range(2)]
    assert runs[0] == runs[1]  # seeded crashes: the same counts every run
    modes = {m["mode"]: m for m in runs[0]["modes"]}
    for m in modes.values():
        assert m["crashes"] > 0
        assert m["charges"] == m["jobs"] - m["lost"] + m["extra_charges"]
    most, least, keyed = modes["at-most-once"], modes["at-least-once"], modes["effect-keys"]
    assert most["lost"] > 0 and most["doubled"] == 0 and most["redelivered"] == 0
    assert least["lost"] == 0 and least["doubled"] > 0 and least["redelivered"] == least["crashes"]
    assert keyed["lost"] == 0 and keyed["doubled"] == 0 and keyed["charges"] == keyed["jobs"]
    assert redis.keys("chumon-lab-*") == []


def test_delivery_without_crashes_loses_and_doubles_nothing(
    capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    r = lab(capsys, "delivery", "--redis-url", redis_url, "--jobs", "30", "--crash-rate", "0")
    assert all(m["crashes"] == m["lost"] == m["doubled"] == 0 and m["charges"] == 30 for m in r["modes"])


def test_consistency_on_a_private_redis(capsys: pytest.CaptureFixture[str]) -> None:
    r = lab(capsys, "consistency", "--orders", "20")
    assert r["right_after_write_stale"] + r["right_after_write_fresh"] == r["orders"] == 20
    assert r["after_wait_stale"] == 0 and r["write_side_stale"] == 0
    assert r["wait_ms_max"] >= r["wait_ms_median"] >= 0
    assert r["projector_applied"] >= 20  # at least the orders it was waited for


def test_the_text_forms_print_the_measured_counts(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    assert cli.main(["lab", "delivery", "--redis-url", redis_url, "--jobs", "40", "--crash-rate", "0"]) == 0
    text = capsys.readouterr().out
    assert "effect-keys" in text and " 40 " in text
