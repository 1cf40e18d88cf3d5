"""Configuration of the order flow, as typed parts of the application's one Settings object.

They are plain models: ``chumon.settings.Settings`` reads them from the environment
(``CHUMON_SMTP__HOST``, ``CHUMON_SIMULATION__PAYMENT_FAULT_RATE``, ...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from workers.limits import RateLimit


class SmtpConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    tls: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "Chumon Shop <orders@chumon.example>"
    message_id_domain: str = Field(default="chumon.example", description="right-hand side of Message-IDs")
    timeout: float = Field(default=10.0, gt=0, description="seconds for connect and each SMTP command")
    keep_alive: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description=(
            "seconds a worker thread keeps its SMTP connection open for its next email (checked with "
            "NOOP first); 0: one connection per email"
        ),
    )
    busy_retry_after: float = Field(
        default=30.0, gt=0, le=3600, description="how long every worker waits after a 421 (slow down)"
    )
    smtputf8: bool = Field(
        default=True,
        description=(
            "the mail server takes internationalized addresses (RFC 6531 SMTPUTF8): an address with a "
            "non-ASCII local part (ü@example.com) is sent with it; false: such addresses are refused "
            "when the order is placed"
        ),
    )


class EventsConfig(BaseModel):
    """The event log and its consumers."""

    model_config = ConfigDict(frozen=True)

    retention_days: float | None = Field(
        default=None, gt=0, description="trim events older than this (None: keep every event)"
    )
    claim_after: float = Field(
        default=5.0, gt=0, description="seconds before a crashed consumer's entries are taken over"
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="deliveries of one entry to a consumer group before it is parked in the group's "
        "dead-letter stream",
    )
    status_interval: float = Field(
        default=30.0, gt=0, description="seconds between two progress lines of `chumon events`"
    )
    gather: float = Field(
        default=0.05,
        ge=0,
        le=1.0,
        description="seconds the projector (and, choreographed, the notifications reactor) waits after "
        "a read that found less than a full batch, so its next read takes the events appended "
        "meanwhile as one batch (the read model and the emails lag up to this much more; neither "
        "is on an order's path to CONFIRMED); 0: read again at once",
    )


class Latency(BaseModel):
    """Seconds one kind of call to a simulated party takes, per operation (0: at once)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    charge: float = Field(default=0.0, ge=0, le=600)
    refund: float = Field(default=0.0, ge=0, le=600)
    arrange: float = Field(default=0.0, ge=0, le=600)
    cancel: float = Field(default=0.0, ge=0, le=600)
    reserve: float = Field(default=0.0, ge=0, le=600)
    release: float = Field(default=0.0, ge=0, le=600)

    def of(self, operation: str) -> float:
        value = getattr(self, operation, 0.0)
        return float(value)


class SimulationConfig(BaseModel):
    """The simulated payment gateway and carrier (no real provider is reachable here).

    Latency, per operation, read as ``CHUMON_SIMULATION__REQUEST_LATENCY__CHARGE=1.5``:
    ``request_latency`` passes before the party acts (the request travels, or the party is
    slow), ``response_latency`` after it acted and before the caller hears (the answer
    travels): the effect then exists while the caller does not know it yet.
    """

    model_config = ConfigDict(frozen=True)

    payment_fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of calls that fail transiently"
    )
    carrier_fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of calls that fail transiently"
    )
    gateway_timeout: float = Field(default=2.0, gt=0, description="how long a call to tok_timeout hangs")
    slow_for: float = Field(
        default=1.5,
        ge=0,
        le=600,
        description="how long a tok_slow charge, or an arrangement to a Slowboat address, takes before "
        "it succeeds",
    )
    request_latency: Latency = Field(default_factory=Latency, description="before the party acts")
    response_latency: Latency = Field(default_factory=Latency, description="after it acted")
    voids: bool = Field(
        default=True,
        description="a compensation that finds nothing to undo voids the step's key, so the step "
        "cannot act later (a cancelled payment intent); false plays a party without that",
    )
    seed: int | None = Field(default=None, description="seed of the fault injection, for repeatable runs")
    payment_rate_limit: RateLimit | None = Field(
        default=None, description='the gateway answers "429: slow down" beyond this rate, e.g. 20/s'
    )
    carrier_rate_limit: RateLimit | None = Field(
        default=None, description='the carrier answers "429: slow down" beyond this rate, e.g. 20/s'
    )

    @field_validator("payment_rate_limit", "carrier_rate_limit", mode="before")
    @classmethod
    def _rate(cls, value: object) -> object:
        return RateLimit.parse(value) if isinstance(value, str) else value


class SagaConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    style: Literal["orchestrated", "choreographed"] = Field(
        default="orchestrated", description="who decides the next step: the saga, or each service"
    )
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    step_timeout: float = Field(
        default=30.0, gt=0, description="a step without an answer this long has failed"
    )
    reservation_hold: float = Field(
        default=900.0, gt=0, description="stock held longer than this for a pending order is given up"
    )
    payment_method_ttl: int = Field(
        default=86_400,
        gt=0,
        le=30 * 86_400,
        description="at most this long a payment token is kept (it goes as soon as the charge step is over)",
    )
    stall_after: float = Field(
        default=300.0,
        gt=0,
        description="a saga that makes no progress this long (on top of step_timeout while a step "
        "runs) flags its order for a person",
    )
    watchdog_interval: float = Field(
        default=5.0, gt=0, description="how often `chumon events` looks for sagas past their deadline"
    )
