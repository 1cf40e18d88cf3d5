"""The payment gateway: a Protocol, and a simulated gateway that behaves like a real one.

No real provider is reachable, so ``SimulatedGateway`` plays one. Its state lives in Redis
under ``OrderKeys.sim("payments", ...)``, because several worker processes call it:

- ``charges`` and ``refunds``: hashes, idempotency key -> the JSON record of the result;
- ``refunded``: hash, charge key -> the idempotency key of the refund that refunded it;
- ``voided``: hash, charge key -> the idempotency key of the refund that found no charge under
  it, and so voided it (see below);
- ``attempts``: hash, idempotency key -> calls made with a ``tok_transient_N`` token;
- ``calls``: hash, operation (``charge``, ``refund``) -> number of calls.

Idempotency works as at a real gateway: the same key always returns the same result (the
same ``charge_id``), across processes and when two calls race (the first writer wins, the
loser returns the winner's record). Reusing a key for another order, amount or currency
raises ValueError. A decline is a result, recorded like a success; a second attempt to pay
needs a new key. A charge can be refunded once, in full; refunding it again under another
key raises ValueError, as real gateways refuse a second full refund.

A refund that finds no charge under its charge key *voids* that key, as cancelling a payment
intent does at a real gateway: a charge that arrives later under the key (a request that was
still on its way when the order gave it up) is answered ``status="voided"`` and takes no
money. The charge and the void race for the key in one script (``orders/lua/put_first.lua``),
so exactly one of them wins. ``SimulationConfig.voids=False`` plays a gateway without voids:
the late charge then succeeds, and it is the saga's job to refund it.

Test tokens, in the style of a card processor's:

- ``tok_ok`` succeeds; so does any token not listed here.
- ``tok_declined`` declines, with ``decline_reason="insufficient_funds"``.
- ``tok_transient_N``, N in 1..9: the first N calls with a given idempotency key raise
  GatewayUnavailable (nothing recorded); later calls succeed.
- ``tok_timeout`` hangs ``SimulationConfig.gateway_timeout`` seconds, then raises
  GatewayTimeout; it never charges.
- ``tok_slow`` takes ``SimulationConfig.slow_for`` seconds, then succeeds: with a short step
  time-out, the charge lands after the order gave it up.

Refunds of charges made with any token succeed. Every call also takes the configured
latencies of its operation (``request_latency.charge``, ``response_latency.refund``, ...). On
top of the tokens, a share ``SimulationConfig.payment_fault_rate`` of all calls fails with
GatewayUnavailable: half of those before processing (nothing recorded), half after the
record is written (the response is "lost": a retry with the same key returns the recorded
result).

The machinery it shares with the simulated carrier is in ``orders.simulation``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis

from orders.config import SimulationConfig
from orders.errors import GatewayTimeout, GatewayUnavailable
from orders.keys import OrderKeys
from orders.model import payment_hint
from orders.simulation import SimulatedSystem, new_id
from workers.policy import RandomSource

TOKEN_OK = "tok_ok"
TOKEN_DECLINED = "tok_declined"
TOKEN_TIMEOUT = "tok_timeout"
TOKEN_SLOW = "tok_slow"
_TOKEN_TRANSIENT = re.compile(r"^tok_transient_([1-9])$")
DECLINE_REASON = "insufficient_funds"


class ChargeResult(BaseModel):
    """The gateway's answer to a charge: succeeded, declined, or voided (its key was voided by a
    refund that came first: no money moved, and nothing is recorded)."""

    model_config = ConfigDict(frozen=True)

    charge_id: str
    idempotency_key: str
    order_id: str
    status: Literal["succeeded", "declined", "voided"]
    amount: int = Field(ge=0, description="minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    decline_reason: str | None = None
    created_at: float


class RefundResult(BaseModel):
    """A full refund of one successful charge."""

    model_config = ConfigDict(frozen=True)

    refund_id: str
    idempotency_key: str
    charge_id: str
    amount: int = Field(ge=0, description="minor units")
    currency: str
    created_at: float


class PaymentGateway(Protocol):
    """Charges and refunds. Both raise a TransientError (GatewayUnavailable, GatewayTimeout) when
    the outcome is unknown: call again with the same idempotency key. A decline is a result."""

    def charge(
        self, *, idempotency_key: str, order_id: str, token: str, amount: int, currency: str
    ) -> ChargeResult: ...

    def refund(self, *, idempotency_key: str, charge_key: str) -> RefundResult | None:
        """Refund in full the successful charge made under ``charge_key``; None if there is none
        (and, at a gateway that can, no charge can be made under ``charge_key`` any more)."""
        ...

    def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        """The charge made under ``idempotency_key``, if any (a lookup: it charges nothing)."""
        ...


def transient_failures(token: str) -> int:
    """How many calls per idempotency key fail for ``token`` (N for ``tok_transient_N``, else 0)."""
    match = _TOKEN_TRANSIENT.match(token)
    return int(match.group(1)) if match else 0


class SimulatedGateway:
    """A payment gateway simulated in Redis (see the module docstring for its test tokens)."""

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
            "payments",
            fault_rate=config.payment_fault_rate,
            unavailable=GatewayUnavailable,
            rand=rand or random.Random(config.seed).random,
            sleep=sleep,
            hang_for=config.gateway_timeout,
            clock=clock,
            request_latency=config.request_latency,
            response_latency=config.response_latency,
            rate_limit=config.payment_rate_limit,
        )
        self.voids = config.voids
        self.slow_for = config.slow_for

    # -- the gateway ----------------------------------------------------------------------------
    def charge(
        self, *, idempotency_key: str, order_id: str, token: str, amount: int, currency: str
    ) -> ChargeResult:
        candidate = self._new_charge(idempotency_key, order_id, token, amount, currency)
        with self.sim.call("charge", idempotency_key):
            self._play_token(token, idempotency_key)
            return self._record_charge(candidate)

    def refund(self, *, idempotency_key: str, charge_key: str) -> RefundResult | None:
        with self.sim.call("refund", idempotency_key):
            charge = self._charge_or_void(charge_key, idempotency_key)
            if charge is None or charge.status != "succeeded":
                return None
            return self._record_refund(idempotency_key, charge_key, charge)

    def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return self.recorded_charge(idempotency_key)

    # -- for tests and the demo -------------------------------------------------------------------
    def charges(self) -> list[ChargeResult]:
        """Every charge recorded (declines included), oldest first."""
        return self.sim.records("charges", ChargeResult)

    def refunds(self) -> list[RefundResult]:
        """Every refund recorded, oldest first."""
        return self.sim.records("refunds", RefundResult)

    def calls(self, operation: Literal["charge", "refund"] | None = None) -> int:
        """Calls received (failed ones included), of one operation or of both."""
        return self.sim.calls(operation)

    def recorded_charge(self, idempotency_key: str) -> ChargeResult | None:
        return self.sim.record("charges", idempotency_key, ChargeResult)

    def voided(self) -> dict[str, str]:
        """Charge keys voided by a refund that found no charge -> that refund's key."""
        return dict(self.sim.items("voided"))

    def charges_for(self, order_id: str) -> list[ChargeResult]:
        return [c for c in self.charges() if c.order_id == order_id]

    def refunds_for(self, order_id: str) -> list[RefundResult]:
        charge_ids = {c.charge_id for c in self.charges_for(order_id)}
        return [r for r in self.refunds() if r.charge_id in charge_ids]

    # -- inside ---------------------------------------------------------------------------------
    def _new_charge(self, key: str, order_id: str, token: str, amount: int, currency: str) -> ChargeResult:
        declined = token == TOKEN_DECLINED
        return ChargeResult(
            charge_id=new_id("ch_"),
            idempotency_key=key,
            order_id=order_id,
            status="declined" if declined else "succeeded",
            amount=amount,
            currency=currency,
            decline_reason=DECLINE_REASON if declined else None,
            created_at=self.sim.clock(),
        )

    def _play_token(self, token: str, key: str) -> None:
        """Fail as the test token says (see the module docstring); return if it lets the call through."""
        if token == TOKEN_SLOW:
            self.sim.sleep(self.slow_for)
        if token == TOKEN_TIMEOUT:
            self.sim.hang()
            raise GatewayTimeout(f"simulated gateway did not answer charge {key!r} in time")
        failures = transient_failures(token)
        if failures and self.sim.bump("attempts", key) <= failures:
            hint = payment_hint(token)  # a gateway's messages never echo the token itself
            raise GatewayUnavailable(f"simulated gateway unavailable ({hint}) for charge {key!r}")

    def _record_charge(self, candidate: ChargeResult) -> ChargeResult:
        key, record = candidate.idempotency_key, candidate.model_dump_json()
        if self.voids:
            charged, stored_json = self.sim.put_first("charges", "voided", key, record)
            if not charged:  # a refund found nothing under this key first, and voided it
                return candidate.model_copy(
                    update={"status": "voided", "decline_reason": f"voided by refund {stored_json!r}"}
                )
        else:
            stored_json = self.sim.put_once("charges", key, record)
        stored = ChargeResult.model_validate_json(stored_json)
        _refuse_reuse(stored, candidate)
        return stored

    def _charge_or_void(self, charge_key: str, refund_key: str) -> ChargeResult | None:
        """The charge under ``charge_key``; if there is none, void the key (when voids are on)."""
        if not self.voids:
            return self.recorded_charge(charge_key)
        voided, stored = self.sim.put_first("voided", "charges", charge_key, refund_key)
        return None if voided else ChargeResult.model_validate_json(stored)

    def _record_refund(self, key: str, charge_key: str, charge: ChargeResult) -> RefundResult:
        record = self.sim.get("refunds", key)
        if record is None:
            self.sim.claim("refunded", charge_key, key)
            record = self.sim.put_once("refunds", key, self._new_refund(key, charge).model_dump_json())
        refund = RefundResult.model_validate_json(record)
        if refund.charge_id != charge.charge_id:
            raise ValueError(
                f"idempotency key {key!r} was used to refund charge {refund.charge_id}, "
                f"not {charge.charge_id} (charge key {charge_key!r})"
            )
        return refund

    def _new_refund(self, key: str, charge: ChargeResult) -> RefundResult:
        return RefundResult(
            refund_id=new_id("re_"),
            idempotency_key=key,
            charge_id=charge.charge_id,
            amount=charge.amount,
            currency=charge.currency,
            created_at=self.sim.clock(),
        )


def _refuse_reuse(stored: ChargeResult, request: ChargeResult) -> None:
    """ValueError if ``stored`` answered a different request than ``request`` under the same key."""
    then = (stored.order_id, stored.amount, stored.currency)
    now = (request.order_id, request.amount, request.currency)
    if then != now:
        raise ValueError(
            f"idempotency key {stored.idempotency_key!r} was used for order {then[0]}, "
            f"{then[1]} {then[2]}; it cannot be reused for order {now[0]}, {now[1]} {now[2]}"
        )
