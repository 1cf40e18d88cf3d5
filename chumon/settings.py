"""The application's settings: the runtime's, plus what the order flow needs.

This module is the one place that reads the environment: ``load()`` builds the object once
per process (entry points call it; nothing runs at import time). Nested parts are read
with a double underscore: ``CHUMON_SMTP__PORT=2525``, ``CHUMON_SAGA__STEP_TIMEOUT=20``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from orders.config import EventsConfig, SagaConfig, SimulationConfig, SmtpConfig
from workers.settings import RuntimeSettings


class DashboardConfig(BaseModel):
    """rq-dashboard as ``chumon dashboard`` serves it: localhost unless told otherwise.

    ``allowed_hosts``: host names (comma-separated in the environment) the dashboard answers
    to besides localhost and IP addresses, e.g. the name a reverse proxy forwards. Any other
    ``Host`` header is refused (DNS rebinding). See docs/operations.md.
    """

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=9181, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


class Settings(RuntimeSettings):
    """Everything configurable, read from ``CHUMON_*`` variables (and ``REDIS_URL``)."""

    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    saga: SagaConfig = Field(default_factory=SagaConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)


@cache
def load() -> Settings:
    return Settings()


def explicit_redis_url() -> str | None:
    """``REDIS_URL`` (or ``CHUMON_REDIS_URL``) if the environment sets one, else None."""
    return os.environ.get("CHUMON_REDIS_URL") or os.environ.get("REDIS_URL") or None
