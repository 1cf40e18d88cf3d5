"""``make demo DEMO_ARGS=--walk``: one order per saga style, told step by step from its trace."""

from __future__ import annotations

from redis import Redis

from chumon import walk
from tests.flow import flow_settings


def test_the_walk_tells_both_styles_from_their_traces(redis: Redis, redis_url: str) -> None:
    data = walk.walk(flow_settings(redis_url, 25), redis)  # the walk starts its own SMTP sink
    orchestrated, choreographed = data["orchestrated"]["steps"], data["choreographed"]["steps"]
    assert data["orchestrated"]["status"] == data["choreographed"]["status"] == "CONFIRMED"
    charge = next(s for s in orchestrated if "command ChargePayment" in s)
    assert "after 1 failed" in charge and "the saga sent it on ReserveInventory's answer" in charge
    charge = next(s for s in choreographed if "command ChargePayment" in s)
    assert "payments reacted to InventoryReserved" in charge
    assert any("the orders service reacted to ShipmentArranged" in s for s in choreographed)
    for steps in (orchestrated, choreographed):
        assert [s.split()[0] for s in steps] == [f"{i}." for i in range(1, len(steps) + 1)]
        assert any("event EmailSent" in s for s in steps)
    text = walk.render(data)
    assert "orchestrated CONFIRMED, choreographed CONFIRMED" in text
