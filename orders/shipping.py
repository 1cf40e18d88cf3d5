"""The carrier: a Protocol, and a simulated carrier that behaves like a real one.

No real carrier is reachable, so ``SimulatedCarrier`` plays one, in the same style as the
simulated payment gateway (``orders.payments``). Its state lives in Redis under
``OrderKeys.sim("carrier", ...)``:

- ``shipments`` and ``cancellations``: hashes, idempotency key -> the JSON record;
- ``cancelled``: hash, arrange key -> the idempotency key of the cancellation that cancelled it;
- ``voided``: hash, arrange key -> the idempotency key of the cancellation that found no
  shipment under it, and so voided it;
- ``calls``: hash, operation (``arrange``, ``cancel``) -> number of calls.

The same idempotency key always returns the same shipment (the first writer wins); reusing
it for another order, address or items raises ValueError. A refusal is a result, recorded
like an arranged shipment. A shipment can be cancelled once; cancelling it again under
another key raises ValueError. A cancellation that finds no shipment voids the arrange key,
as the payment gateway's refund does (``orders.payments``): an arrangement arriving later is
answered ``status="voided"`` and arranges nothing (``SimulationConfig.voids``).

Test addresses:

- an address containing ``Nowhere`` (any case) is refused, with
  ``refusal_reason="undeliverable address"``;
- an address containing ``Slowpoke`` (any case) hangs ``SimulationConfig.gateway_timeout``
  seconds, then raises CarrierUnavailable; it never arranges anything;
- an address containing ``Slowboat`` (any case) takes ``SimulationConfig.slow_for`` seconds,
  then is arranged;
- any other address is arranged.

Cancellations of any arranged shipment succeed. Every call takes the configured latencies of
its operation (``arrange``, ``cancel``). A share ``SimulationConfig.carrier_fault_rate``
of all calls fails with CarrierUnavailable: half before processing (nothing recorded), half
after the record is written (a retry with the same key returns the recorded result).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis

from orders.config import SimulationConfig
from orders.errors import CarrierUnavailable
from orders.keys import OrderKeys
from orders.simulation import SimulatedSystem, new_id
from workers.policy import RandomSource

ADDRESS_REFUSED = "nowhere"
ADDRESS_SLOW = "slowpoke"
ADDRESS_SLOWBOAT = "slowboat"
REFUSAL_REASON = "undeliverable address"


class ShipmentItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class Shipment(BaseModel):
    """The carrier's answer to a request for a shipment: arranged, refused, or voided (its key
    was voided by a cancellation that came first: nothing arranged, nothing recorded)."""

    model_config = ConfigDict(frozen=True)

    shipment_id: str
    idempotency_key: str
    order_id: str
    status: Literal["arranged", "refused", "voided"]
    address: str = Field(min_length=1)
    refusal_reason: str | None = None
    items: list[ShipmentItem] = Field(min_length=1)
    created_at: float


class ShipmentCancellation(BaseModel):
    model_config = ConfigDict(frozen=True)

    cancellation_id: str
    idempotency_key: str
    shipment_id: str
    created_at: float


class Carrier(Protocol):
    """Arranges and cancels shipments. Both raise CarrierUnavailable (a TransientError) when the
    outcome is unknown: call again with the same idempotency key. A refusal is a result."""

    def arrange(
        self, *, idempotency_key: str, order_id: str, address: str, items: Sequence[tuple[str, int]]
    ) -> Shipment: ...

    def cancel(self, *, idempotency_key: str, arrange_key: str) -> ShipmentCancellation | None:
        """Cancel the shipment arranged under ``arrange_key``; None if there is none (and, at a
        carrier that can, none can be arranged under ``arrange_key`` any more)."""
        ...

    def find_shipment(self, idempotency_key: str) -> Shipment | None:
        """The shipment arranged (or refused) under ``idempotency_key``, if any (a lookup)."""
        ...


class SimulatedCarrier:
    """A carrier simulated in Redis (see the module docstring for its test addresses)."""

    def __init__(
        self,
        redis: Redis,
        keys: OrderKeys,
        config: SimulationConfig,
        *,
        rand: RandomSource | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sim = SimulatedSystem(
            redis,
            keys,
            "carrier",
            fault_rate=config.carrier_fault_rate,
            unavailable=CarrierUnavailable,
            rand=rand or random.Random(config.seed).random,
            sleep=sleep,
            hang_for=config.gateway_timeout,
            clock=clock,
            request_latency=config.request_latency,
            response_latency=config.response_latency,
            rate_limit=config.carrier_rate_limit,
        )
        self.voids = config.voids
        self.slow_for = config.slow_for

    # -- the carrier ----------------------------------------------------------------------------
    def arrange(
        self, *, idempotency_key: str, order_id: str, address: str, items: Sequence[tuple[str, int]]
    ) -> Shipment:
        candidate = self._new_shipment(idempotency_key, order_id, address, items)
        with self.sim.call("arrange", idempotency_key):
            self._play_address(address, idempotency_key)
            return self._record_shipment(candidate)

    def cancel(self, *, idempotency_key: str, arrange_key: str) -> ShipmentCancellation | None:
        with self.sim.call("cancel", idempotency_key):
            shipment = self._shipment_or_void(arrange_key, idempotency_key)
            if shipment is None or shipment.status != "arranged":
                return None
            return self._record_cancellation(idempotency_key, arrange_key, shipment)

    def find_shipment(self, idempotency_key: str) -> Shipment | None:
        return self.recorded_shipment(idempotency_key)

    # -- for tests and the demo -------------------------------------------------------------------
    def shipments(self) -> list[Shipment]:
        """Every shipment recorded (refusals included), oldest first."""
        return self.sim.records("shipments", Shipment)

    def cancellations(self) -> list[ShipmentCancellation]:
        """Every cancellation recorded, oldest first."""
        return self.sim.records("cancellations", ShipmentCancellation)

    def calls(self, operation: Literal["arrange", "cancel"] | None = None) -> int:
        """Calls received (failed ones included), of one operation or of both."""
        return self.sim.calls(operation)

    def recorded_shipment(self, idempotency_key: str) -> Shipment | None:
        return self.sim.record("shipments", idempotency_key, Shipment)

    def voided(self) -> dict[str, str]:
        """Arrange keys voided by a cancellation that found no shipment -> that cancellation's key."""
        return dict(self.sim.items("voided"))

    def shipments_for(self, order_id: str) -> list[Shipment]:
        return [s for s in self.shipments() if s.order_id == order_id]

    def cancellations_for(self, order_id: str) -> list[ShipmentCancellation]:
        shipment_ids = {s.shipment_id for s in self.shipments_for(order_id)}
        return [c for c in self.cancellations() if c.shipment_id in shipment_ids]

    # -- inside ---------------------------------------------------------------------------------
    def _new_shipment(
        self, key: str, order_id: str, address: str, items: Sequence[tuple[str, int]]
    ) -> Shipment:
        refused = ADDRESS_REFUSED in address.lower()
        return Shipment(
            shipment_id=new_id("shp_"),
            idempotency_key=key,
            order_id=order_id,
            status="refused" if refused else "arranged",
            address=address,
            refusal_reason=REFUSAL_REASON if refused else None,
            items=[ShipmentItem(sku=sku, quantity=quantity) for sku, quantity in items],
            created_at=self.sim.clock(),
        )

    def _play_address(self, address: str, key: str) -> None:
        """Hang and fail for a ``Slowpoke`` address, take long for a ``Slowboat`` one."""
        if ADDRESS_SLOWBOAT in address.lower():
            self.sim.sleep(self.slow_for)
        if ADDRESS_SLOW in address.lower():
            self.sim.hang()
            raise CarrierUnavailable(f"simulated carrier did not answer arrange {key!r} in time")

    def _record_shipment(self, candidate: Shipment) -> Shipment:
        key, record = candidate.idempotency_key, candidate.model_dump_json()
        if self.voids:
            arranged, stored_json = self.sim.put_first("shipments", "voided", key, record)
            if not arranged:  # a cancellation found nothing under this key first, and voided it
                return candidate.model_copy(
                    update={"status": "voided", "refusal_reason": f"voided by cancellation {stored_json!r}"}
                )
        else:
            stored_json = self.sim.put_once("shipments", key, record)
        stored = Shipment.model_validate_json(stored_json)
        _refuse_reuse(stored, candidate)
        return stored

    def _shipment_or_void(self, arrange_key: str, cancel_key: str) -> Shipment | None:
        """The shipment under ``arrange_key``; if there is none, void the key (when voids are on)."""
        if not self.voids:
            return self.recorded_shipment(arrange_key)
        voided, stored = self.sim.put_first("voided", "shipments", arrange_key, cancel_key)
        return None if voided else Shipment.model_validate_json(stored)

    def _record_cancellation(self, key: str, arrange_key: str, shipment: Shipment) -> ShipmentCancellation:
        record = self.sim.get("cancellations", key)
        if record is None:
            self.sim.claim("cancelled", arrange_key, key)
            record = self.sim.put_once(
                "cancellations", key, self._new_cancellation(key, shipment).model_dump_json()
            )
        cancellation = ShipmentCancellation.model_validate_json(record)
        if cancellation.shipment_id != shipment.shipment_id:
            raise ValueError(
                f"idempotency key {key!r} was used to cancel shipment {cancellation.shipment_id}, "
                f"not {shipment.shipment_id} (arrange key {arrange_key!r})"
            )
        return cancellation

    def _new_cancellation(self, key: str, shipment: Shipment) -> ShipmentCancellation:
        return ShipmentCancellation(
            cancellation_id=new_id("cnl_"),
            idempotency_key=key,
            shipment_id=shipment.shipment_id,
            created_at=self.sim.clock(),
        )


def _refuse_reuse(stored: Shipment, request: Shipment) -> None:
    """ValueError if ``stored`` answered a different request than ``request`` under the same key."""
    then = (stored.order_id, stored.address, stored.items)
    now = (request.order_id, request.address, request.items)
    if then != now:
        raise ValueError(
            f"idempotency key {stored.idempotency_key!r} was used for order {then[0]} to "
            f"{then[1]!r}; it cannot be reused for order {now[0]} to {now[1]!r} or other items"
        )
