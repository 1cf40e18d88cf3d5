"""The event log's consumers under poison: an event a consumer cannot read (a rolling deploy),
a reaction that fails every time; parking, flags, `chumon events dlq`, replay after an upgrade;
and a rebuild that no reader can fall into."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from chumon import cli
from chumon.exporter import registry as exporter_registry
from chumon.settings import load
from orders import commands as c
from orders import events as e
from orders.config import EventsConfig
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.projection import apply
from orders.projector import GROUP, rebuild
from orders.readmodel import ReadModel
from tests.apps.upgrade import install, uninstall, wrap_gift
from tests.flow import running_flow
from tests.support import wait_until
from workers.joblog import set_sink
from workers.streams import ParkedEntries, entries

KEYS = OrderKeys()


@pytest.fixture(params=["orchestrated", "choreographed"])
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def current_version() -> Iterator[None]:
    """Each test starts with the current version (GiftWrapped unknown) and leaves it so."""
    uninstall()
    yield
    uninstall()


@pytest.fixture
def chumon(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Any]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    load.cache_clear()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*argv: str) -> tuple[int, Any, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, json.loads(out) if "--json" in argv and out.strip() else out, err

    yield run
    load.cache_clear()
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


def parked(redis: Redis, group: str) -> list[Any]:
    return ParkedEntries(redis, group, KEYS.parking(group)).read()


def history_summary(redis: Redis, order_id: str) -> Any:
    """The summary a replay of the order's whole history gives, with the current version."""
    summary = None
    for entry in entries(redis.xrange(KEYS.events)):
        if entry.fields["order_id"] == order_id:
            summary = apply(summary, e.from_fields(entry.fields))
    return summary


def test_an_unreadable_event_is_parked_and_never_freezes_its_order(
    redis: Redis, redis_url: str, style: str, chumon: Any
) -> None:
    """Issue 11, 3: an upgraded writer's new event type mid-history. The consumers of the
    current version park it, flag the order, and go on with its later events; after the
    upgrade, `chumon events dlq retry` makes them read it, and the flags go away."""
    with running_flow(redis, redis_url, style=style) as flow:
        order_id = flow.place(("TEA", 1))
        flow.settled(order_id)
        wrap_gift(flow.services.orders, order_id)  # unreadable for this version
        gift_seq = next(
            int(fields[b"seq"])
            for _, fields in redis.xrange(KEYS.events)
            if fields[b"type"] == b"GiftWrapped"
        )
        flow.services.orders.flag(order_id, "customer phoned", cause="test")  # seq n + 1: readable
        if style == "choreographed":  # the services could not read it either: they flag the order
            wait_until(lambda: len(parked(redis, "reactor-payments")) == 1, timeout=20, message="reactors")
        summary = wait_until(
            lambda: (s := flow.producer.get_order_summary(order_id))
            and s.version == flow.order(order_id).version and s,
            timeout=20,
            message="the read model to go past the unreadable event",
        )  # fmt: skip
        assert (
            summary.version > gift_seq and summary.attention == flow.order(order_id).attention
        )  # not frozen
        assert "customer phoned" in [entry.text.partition(": ")[2] for entry in summary.timeline]
        assert [u.seq for u in summary.unreadable] == [gift_seq] and "GiftWrapped" in summary.unreadable_note
        (entry,) = parked(redis, GROUP)
        assert entry.fields["type"] == "GiftWrapped" and "unknown event type 'GiftWrapped'" in entry.reason
        code, listed, _ = chumon("order", "list", "--status", "needs_attention", "--json")
        assert code == 0 and [o["order_id"] for o in listed] == [order_id]
        if style == "choreographed":
            assert "could not process event GiftWrapped" in str([e.text for e in summary.timeline])
        metrics = {m.name: m for m in exporter_registry(redis, flow.settings).collect()}
        samples = {s.labels["group"]: s.value for s in metrics["chumon_events_dead_letters"].samples}
        assert samples["projector"] == 1

        install()  # the upgrade: this version reads GiftWrapped
        code, result, _ = chumon("events", "dlq", "retry", "--all", "--json")
        assert code == 0 and result["retried"]["projector"] == [entry.id]
        wait_until(lambda: not flow.producer.get_order_summary(order_id).unreadable, timeout=20,
                   message="the refold")  # fmt: skip
        wait_until(
            lambda: flow.producer.get_order_summary(order_id) == history_summary(redis, order_id),
            timeout=20,
            message="the summary a replay of the whole history gives",
        )
        summary = flow.producer.get_order_summary(order_id)
        assert summary.unreadable == [] and summary.timeline[gift_seq - 1].event == "GiftWrapped"
        assert redis.exists(KEYS.view_history(1, order_id)) == 0  # nothing kept once read
        wait_until(lambda: not any(parked(redis, g) for g in ("projector", "reactor-orders")), timeout=20,
                   message="nothing parked")  # fmt: skip
        wait_until(lambda: flow.order(order_id).attention in (None, "customer phoned"), timeout=20,
                   message="the reactors' flags taken back")  # fmt: skip
        wait_until(lambda: flow.read_side_differences([order_id]) == [], timeout=20, message="the read side")
        assert redis.xlen(KEYS.replayed_events(GROUP)) == 0  # replayed entries are deleted once done


def test_a_reaction_that_always_fails_is_parked_after_its_deliveries_and_flags_the_order(
    redis: Redis, redis_url: str
) -> None:
    """Issue 11, 4: a poison entry is not retried for ever."""
    with running_flow(redis, redis_url, style="choreographed", events=EventsConfig(max_deliveries=2)) as flow:
        store, send = flow.services.orders.store, flow.services.orders.store.send_many
        broken = threading.Event()
        broken.set()

        def failing_send(sends: Any, **kwargs: Any) -> Any:
            outgoing = [o for _, outs in sends for o in outs]
            if broken.is_set() and any(isinstance(o.command, c.ChargePayment) for o in outgoing):
                raise RuntimeError("payments misconfigured")
            return send(sends, **kwargs)

        store.send_many = failing_send  # type: ignore[method-assign]
        order_id = flow.place(("TEA", 1))
        (entry,) = wait_until(lambda: parked(redis, "reactor-payments"), timeout=30, message="parking")
        assert entry.deliveries == 3 and "payments misconfigured" in entry.reason
        assert entry.fields["type"] == "InventoryReserved" and entry.fields["order_id"] == order_id
        flagged = flow.order(order_id).attention or ""
        assert "reactor-payments could not process event InventoryReserved" in flagged
        assert "chumon events dlq retry --group reactor-payments" in flagged
        assert flow.order(order_id).status.value == "PENDING"

        broken.clear()  # fixed
        sent = ParkedEntries(redis, "reactor-payments", KEYS.parking("reactor-payments")).retry([entry.id])
        assert sent == [entry.id] and parked(redis, "reactor-payments") == []
        wait_until(lambda: flow.order(order_id).attention is None, timeout=30, message="the flag taken back")
        order = flow.settled(order_id, timeout=30)
        assert order.status.value == "CONFIRMED" and order.attention is None
        assert flow.audit().ok


def test_the_dlq_commands(redis: Redis, redis_url: str, chumon: Any) -> None:
    with running_flow(redis, redis_url) as flow:
        order_id = flow.place(("TEA", 1))
        flow.settled(order_id)
        wrap_gift(flow.services.orders, order_id)
        wait_until(lambda: parked(redis, GROUP), timeout=20, message="parking")
        code, rows, _ = chumon("events", "dlq", "list", "--json")
        assert code == 0 and len(rows) == 1
        row = rows[0]
        assert (row["group"], row["order_id"], row["type"], row["deliveries"]) == (
            GROUP,
            order_id,
            "GiftWrapped",
            1,
        )
        code, text, _ = chumon("events", "dlq", "list")
        assert code == 0 and "GiftWrapped" in text and order_id in text
        code, shown, _ = chumon("events", "dlq", "show", row["id"], "--json")
        assert code == 0 and shown["fields"]["type"] == "GiftWrapped" and shown["entry_id"] == row["entry_id"]
        code, _, err = chumon("events", "dlq", "show", "1-1")
        assert code == 1 and "no parked entry 1-1" in err
        code, _, err = chumon("events", "dlq", "retry")
        assert code == 2 and "--all" in err
        code, result, _ = chumon("events", "dlq", "retry", row["id"], "9-9", "--json")
        assert code == 1 and result == {"retried": {GROUP: [row["id"]]}, "not_found": ["9-9"]}
        # this version still cannot read it: parked again, at once
        wait_until(lambda: parked(redis, GROUP), timeout=20, message="parked again")
        code, _, err = chumon("events", "dlq", "list", "--group", "nope")
        assert code == 1 and "--group: no consumer group 'nope'" in err


def test_a_rebuild_leaves_no_reader_in_a_dropped_generation(redis: Redis, redis_url: str) -> None:
    """Issue 11, 5: a reader in another process caches the generation; a rebuild swaps and drops
    it at once. The reader never sees the order vanish."""
    with running_flow(redis, redis_url) as flow:
        ids = [flow.place(("TEA", 1)) for _ in range(5)]
        for order_id in ids:
            flow.settled(order_id)
        reader = ReadModel(redis, KEYS, gen_cache=3600)  # caches the generation (nearly) for ever
        wait_until(lambda: all(reader.get(i) for i in ids), timeout=20, message="projection")
        old = reader.current()
        report = rebuild(redis, KEYS, ReadModel(redis, KEYS))
        assert report.old == old and redis.exists(KEYS.view_all(old)) == 0  # dropped at once
        assert all(reader.get(i) is not None for i in ids)  # read from the new one
        assert reader.current() == report.new
        assert len(reader.query(status=OrderStatus.CONFIRMED)) == 5

        misses: list[str] = []
        stop = threading.Event()
        readers = [ReadModel(redis, KEYS, gen_cache=3600) for _ in range(3)]

        def keep_reading(view: ReadModel) -> None:
            while not stop.is_set():
                misses.extend(i for i in ids if view.get(i) is None)

        threads = [threading.Thread(target=keep_reading, args=(view,)) for view in readers]
        for thread in threads:
            thread.start()
        for _ in range(3):
            rebuild(redis, KEYS, ReadModel(redis, KEYS))
        stop.set()
        for thread in threads:
            thread.join(10)
        assert misses == []
        generations = {int(k.decode().split(":")[2]) for k in redis.scan_iter("chumon:view:*:all")}
        assert generations == {ReadModel(redis, KEYS).current(fresh=True)}  # no dropped one came back
