"""The cluster layout's key shapes and queue splits (workers/keys.py), without a server."""

from __future__ import annotations

import fakeredis
import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from tests.apps import clustered
from tests.support import make_settings
from workers import EnqueueOptions
from workers.crew import served_queues
from workers.enqueue import Enqueuer
from workers.keys import (
    SLOTS,
    Keys,
    base_queue,
    check_queue_name,
    relay_queue,
    shard_tags,
    sub_queue_for,
    sub_queues,
    tag_of,
)


def test_every_key_of_a_queue_is_in_the_slot_of_its_tag() -> None:
    keys = Keys("chumon", tag="emails")
    slot = key_slot(b"emails")
    shapes = [
        keys.job("abc"), keys.queue("emails"), keys.queue("emails.dlq"), keys.wip("emails"),
        keys.failed("emails"), keys.scheduled("emails"), keys.results("abc"), keys.signal("emails"),
        keys.effect_key("t:1"), keys.enqueue_key("t:1"), keys.inflight("w"), keys.live_workers,
        keys.paused, keys.events, keys.replication_fence, keys.RQ_QUEUES, keys.queue(relay_queue("emails")),
    ]  # fmt: skip
    assert {key_slot(k.encode()) for k in shapes} == {slot}
    assert (
        keys.job("abc") == "rq:{emails}:job:abc" and keys.signal("emails") == "chumon:{emails}:signal:emails"
    )
    assert Keys("chumon").job("abc") == "rq:job:abc"  # one Redis: rq's own shapes
    assert keys.queue_index == Keys("chumon").queue_index == "chumon:queue-index"
    assert keys.runtime_owned("chumon:{payments}:idem:effect:x")  # any tag's keys are the runtime's


def test_an_effect_outside_the_queue_slot_is_refused_with_the_reason() -> None:
    keys = Keys("chumon", tag="accounts")
    assert keys.effect_refusal("balances:{accounts}") is False
    refusal = keys.effect_refusal("balances")
    assert isinstance(refusal, str) and "balances:{accounts}" in refusal
    assert keys.effect_refusal("rq:{accounts}:job:x") is True  # the runtime's own, in any layout
    assert Keys("chumon").effect_refusal("balances") is False


def test_sub_queues_land_in_evenly_spaced_slot_ranges_and_keys_pick_one_for_good() -> None:
    for count in (2, 3, 6):
        subs = sub_queues("hot", count)
        assert len(set(subs)) == count and all(base_queue(s) == "hot" for s in subs)
        assert [key_slot(s.encode()) * count // SLOTS for s in subs] == list(range(count))
        assert tag_of(subs[0] + ".dlq") == subs[0]  # a sub-queue's dead letters stay in its slot
    picks = {sub_queue_for("hot", 3, f"t:{n}") for n in range(50)}
    assert picks == set(sub_queues("hot", 3))
    assert sub_queue_for("hot", 3, "t:7") == sub_queue_for("hot", 3, "t:7")
    assert sub_queues("hot", 1) == ("hot",) and base_queue("a-b#x") == "a-b#x"


def test_queue_split_settings_are_checked_and_ignored_on_one_redis() -> None:
    assert make_settings("redis://x", queue_split="hot=3, cold=2").queue_split == {"hot": 3, "cold": 2}
    for bad in ("hot", "hot=0", "hot=9999", "b@d=2"):
        with pytest.raises(ValidationError):
            make_settings("redis://x", queue_split=bad)
    enqueuer = Enqueuer(fakeredis.FakeRedis(), make_settings("redis://x", queue_split={"alpha": 3}))
    spec = enqueuer.spec(clustered.registry.get("c.tally"), {"n": 1}, EnqueueOptions())
    assert spec["queue"] == "alpha"  # one Redis: no split (the setting is for clusters)


def test_a_group_of_queues_shares_one_slot_and_names_are_checked() -> None:
    assert tag_of("reports@acme") == tag_of("exports@acme") == tag_of("reports@acme.dlq") == "acme"
    assert check_queue_name("reports@acme") == "reports@acme"
    for bad in ("@acme", "reports@", "a@b@c", "a b", "a.dlq@x"):
        with pytest.raises(ValueError, match="is invalid"):
            check_queue_name(bad)
    with pytest.raises(ValidationError, match="cannot be split"):
        make_settings("redis://x", queue_split={"reports@acme": 2})
    assert served_queues(["a", "r@g", "b", "s@g"], {"b": 2}, cluster=True) == [
        ["a"], ["r@g", "s@g"], [sub_queues("b", 2)[0]], [sub_queues("b", 2)[1]],
    ]  # fmt: skip
    assert served_queues(["a", "r@g"], {"a": 2}, cluster=False) == [["a", "r@g"]]
    tags = shard_tags(2)
    sharded = {"orders", "payments"}
    assert served_queues(["orders", "payments"], {}, cluster=True, sharded=sharded, shards=2) == [
        [f"orders@{tags[0]}", f"payments@{tags[0]}"], [f"orders@{tags[1]}", f"payments@{tags[1]}"],
        ["orders"], ["payments"],
    ]  # fmt: skip


def test_a_bad_cluster_url_is_refused_naming_the_problem() -> None:
    from workers.connection import connect

    for url, problem in [
        ("redis+cluster://", "names no node"),
        ("redis+cluster://127.0.0.1", "is not host:port"),
        ("redis+cluster://127.0.0.1:port", "is not host:port"),
    ]:
        with pytest.raises(ValueError, match=problem):
            connect(url)


def test_a_moved_slot_is_recognised_whichever_way_redis_py_reports_it() -> None:
    from redis.exceptions import AskError, ConnectionError, MovedError, ResponseError

    from workers.connection import slot_moved

    assert slot_moved(MovedError("14398 127.0.0.1:7002"))  # redis-py's parsed reply: no "MOVED" in it
    assert slot_moved(AskError("14398 127.0.0.1:7002"))
    assert slot_moved(ResponseError("MOVED 14398 127.0.0.1:7002"))
    assert not slot_moved(ResponseError("WRONGTYPE Operation against a key"))
    assert not slot_moved(ConnectionError("refused"))
