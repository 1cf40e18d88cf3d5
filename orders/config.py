"""Configuration of the order flow, as typed parts of the application's one Settings object.

They are plain models: ``chumon.settings.Settings`` reads them from the environment
(``CHUMON_SMTP__HOST``, ``CHUMON_SIMULATION__PAYMENT_FAULT_RATE``, ...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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


class EventsConfig(BaseModel):
    """The event log and its consumers."""

    model_config = ConfigDict(frozen=True)

    retention_days: float | None = Field(
        default=None, gt=0, description="trim events older than this (None: keep every event)"
    )
    claim_after: float = Field(
        default=5.0, gt=0, description="seconds before a crashed consumer's entries are taken over"
    )


class SimulationConfig(BaseModel):
    """The simulated payment gateway and carrier (no real provider is reachable here)."""

    model_config = ConfigDict(frozen=True)

    payment_fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of calls that fail transiently"
    )
    carrier_fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of calls that fail transiently"
    )
    gateway_timeout: float = Field(default=2.0, gt=0, description="how long a call to tok_timeout hangs")
    seed: int | None = Field(default=None, description="seed of the fault injection, for repeatable runs")


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
