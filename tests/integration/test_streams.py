"""The generic stream consumer (workers/streams.py, workers/consumer.py) on a real Redis:
delivery counts, the cap, parking with the reason, retry through the replay stream, a group
that Redis lost, and one poison entry that holds back nobody else."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis import Redis

from tests.support import wait_until
from workers.consumer import Outage, configuration_error, consume
from workers.streams import META, Entry, GroupReader, ParkedEntries, Parking

STREAM = "t:stream"
PARKING = Parking(parked="t:parked", replay="t:replay")
log = logging.getLogger("test.streams")


class Consumer:
    """Processes entries; fails every time on those whose ``n`` is in ``poison``."""

    def __init__(self, reader: GroupReader, poison: set[str]) -> None:
        self.reader = reader
        self.poison = poison
        self.done: list[str] = []
        self.given_up: list[tuple[str, str]] = []

    def process(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.fields["n"] in self.poison:
                raise ValueError(f"cannot handle {entry.fields['n']}")
        self.done += [entry.fields["n"] for entry in entries]
        self.reader.ack(entries)

    def give_up(self, items: list[tuple[Entry, str]]) -> None:
        self.given_up += [(entry.fields["n"], reason) for entry, reason in items]
        self.reader.dead_letter(items)


@pytest.fixture
def reader(redis: Redis) -> GroupReader:
    for n in range(5):
        redis.xadd(STREAM, {"n": str(n)})
    group = GroupReader(
        redis, STREAM, "g", "c1", block=0.05, claim_after=0.1, parking=PARKING, max_deliveries=2
    )
    group.ensure_group()
    return group


def test_one_poison_entry_is_parked_after_its_deliveries_and_holds_back_nobody(
    redis: Redis, reader: GroupReader
) -> None:
    consumer = Consumer(reader, poison={"2"})
    consume(consumer, log)
    assert consumer.done == ["0", "1", "3", "4"]  # the batch failed, then went one by one
    wait_until(lambda: [consume(consumer, log)] and consumer.given_up, timeout=10, message="the cap")
    ((n, reason),) = consumer.given_up
    assert n == "2" and "delivered 3 times" in reason and "ValueError: cannot handle 2" in reason
    (parked,) = ParkedEntries(redis, "g", PARKING).read()
    assert parked.fields == {"n": "2"} and parked.deliveries == 3 and parked.stream == STREAM
    assert parked.group == "g" and parked.reason == reason
    assert redis.xpending(STREAM, "g")["pending"] == 0  # acknowledged with the parking, not forgotten


def test_retry_hands_a_parked_entry_back_through_the_replay_stream(redis: Redis, reader: GroupReader) -> None:
    consumer = Consumer(reader, poison={"2"})
    wait_until(lambda: [consume(consumer, log)] and consumer.given_up, timeout=10, message="the cap")
    parked = ParkedEntries(redis, "g", PARKING)
    (entry,) = parked.read()
    consumer.poison.clear()  # fixed
    assert parked.retry([entry.id, "0-1"]) == [entry.id] and parked.read() == []
    wait_until(lambda: [consume(consumer, log)] and "2" in consumer.done, timeout=10, message="the replay")
    assert redis.xlen(PARKING.replay) == 0  # deleted once processed
    replayed = Entry("9-9", {"n": "2", META + "id": entry.entry_id}, PARKING.replay)
    assert replayed.origin == entry.entry_id


def test_a_group_redis_lost_is_made_again(redis: Redis, reader: GroupReader) -> None:
    redis.delete(STREAM, PARKING.replay)  # as after a restart without persistence
    assert reader.read() == []
    redis.xadd(STREAM, {"n": "new"})
    consumer = Consumer(reader, poison=set())
    wait_until(
        lambda: consume(consumer, log) and consumer.done == ["new"], timeout=10, message="the new group"
    )


def test_outages_are_logged_once_and_configuration_errors_named(caplog: Any) -> None:
    from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

    outage = Outage(logging.getLogger("test.outage"), cap=2.0)
    pauses = [outage.failed("a", ConnectionError("refused")) for _ in range(6)]
    outage.failed("b", ConnectionError("refused"))
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0] and outage.down
    outage.ok("a")
    assert not outage.down
    lines = [r.getMessage() for r in caplog.records if r.name == "test.outage"]
    assert len(lines) == 2 and "redis unavailable" in lines[0] and "answers again" in lines[1]
    assert "credentials" in (configuration_error(AuthenticationError("WRONGPASS")) or "")
    assert "lacks a command" in (configuration_error(ResponseError("ERR unknown command 'XAUTOCLAIM'")) or "")
    assert configuration_error(ConnectionError("refused")) is None
