"""Reading the order flow's event stream (``chumon:events``) as it grows.

Latency is taken from the events themselves: the OrderConfirmed event's ``at`` minus the
order's ``placed_at`` (in its OrderPlaced event). The producer (this process) and the
workers stamp them with the same host's clock.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis

from bench.drain import RunFailed
from orders.events import OrderConfirmed, OrderPlaced, from_fields
from workers.codec import text

SETTLED = frozenset({"OrderConfirmed", "InventoryCommitted", "EmailSent"})
BAD = frozenset({"OrderCancelled", "OrderNeedsAttention", "EmailFailed"})
CHUNK = 2000


@dataclass
class EventLog:
    """Everything the stream said about each order so far."""

    redis: Redis
    key: str
    last_id: str = "-"
    placed_at: dict[str, float] = field(default_factory=dict)
    confirmed_at: dict[str, float] = field(default_factory=dict)
    kinds: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    events: int = 0
    done: set[str] = field(default_factory=set)
    """Orders with every SETTLED event seen (kept as they come: ``settled`` is asked every 50 ms)."""

    def read(self) -> None:
        """Read the entries added since the last read."""
        while True:
            start = "-" if self.last_id == "-" else "(" + self.last_id
            entries: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(
                self.key, min=start, max="+", count=CHUNK
            )  # type: ignore[assignment]
            for entry_id, raw in entries:
                self.last_id = text(entry_id)
                self._take({text(k): text(v) for k, v in raw.items()})
            if len(entries) < CHUNK:
                return

    def _take(self, fields: dict[str, str]) -> None:
        self.events += 1
        kind, order_id = fields["type"], fields["order_id"]
        kinds = self.kinds[order_id]
        kinds.add(kind)
        if kind in SETTLED and kinds >= SETTLED:
            self.done.add(order_id)
        if kind in BAD:
            raise RunFailed(f"order {order_id}: {kind} {fields.get('data', '')[:200]}")
        if kind == "OrderPlaced":
            placed = from_fields(fields)
            assert isinstance(placed, OrderPlaced)
            self.placed_at[order_id] = float(placed.order["placed_at"])
        elif kind == "OrderConfirmed":
            confirmed = from_fields(fields)
            assert isinstance(confirmed, OrderConfirmed)
            self.confirmed_at[order_id] = confirmed.at

    def settled(self, order_ids: list[str]) -> int:
        return len(self.done.intersection(order_ids))

    def wait_settled(
        self, order_ids: list[str], timeout: float, progress: Callable[[int], None] | None = None
    ) -> None:
        """Until every order is confirmed, its stock committed and its email sent; RunFailed otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            settled = self.settled(order_ids)
            if progress:
                progress(settled)
            if settled == len(order_ids):
                return
            if time.monotonic() > deadline:
                raise RunFailed(f"orders: {settled}/{len(order_ids)} settled after {timeout:g} s")
            time.sleep(0.05)

    def latencies_ms(self, order_ids: list[str]) -> list[float]:
        return sorted((self.confirmed_at[i] - self.placed_at[i]) * 1000 for i in order_ids)

    def steady_rate(self, order_ids: list[str], low: float = 0.1, high: float = 0.9) -> float:
        """Confirmations per second between the 10th and 90th percentile of confirmation times."""
        times = sorted(self.confirmed_at[i] for i in order_ids)
        first, last = int(low * (len(times) - 1)), int(high * (len(times) - 1))
        if last <= first or times[last] <= times[first]:
            return math.nan
        return (last - first) / (times[last] - times[first])


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
