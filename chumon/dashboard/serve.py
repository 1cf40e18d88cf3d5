"""Start the dashboard: settings that would fail open are refused; waitress serves it.

Refused, with one line naming the setting: a password without a user name (or the other way
round), and a listening address other than loopback without credentials. A host name other
than ``localhost`` counts as not loopback: what it resolves to is not known here.

Why waitress: the dashboard is one small Flask app with a handful of users polling JSON every
2.5 s. waitress is pure Python (nothing to compile, the same on every platform), serves it
from one process with a thread pool, has no config files or worker processes to supervise,
and does not trust ``X-Forwarded-*`` headers unless told to. gunicorn would add a pre-fork
master and worker processes (each with its own Redis pool) for nothing, and is Unix-only.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
from dataclasses import dataclass

from redis import Redis
from waitress import create_server

from chumon.dashboard import Guard, make_app
from chumon.logs import mask_url
from chumon.settings import DashboardConfig
from workers.settings import RuntimeSettings

log = logging.getLogger("chumon.dashboard")
THREADS = 8


class Refused(Exception):
    """Settings that would serve the dashboard unprotected; the message names the setting."""


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    username: str | None
    password: str | None
    allowed_hosts: tuple[str, ...]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def options(config: DashboardConfig, *, host: str | None = None, port: int | None = None) -> Options:
    """The options to serve with, or Refused."""
    username = config.username or None
    password = config.password.get_secret_value() if config.password else None
    password = password or None
    if password and not username:
        raise Refused(
            "CHUMON_DASHBOARD__PASSWORD is set but CHUMON_DASHBOARD__USERNAME is not: "
            "set both for basic auth, or neither"
        )
    if username and not password:
        raise Refused(
            "CHUMON_DASHBOARD__USERNAME is set but CHUMON_DASHBOARD__PASSWORD is not: "
            "set both for basic auth, or neither"
        )
    bind = host or config.host
    if not username and not is_loopback(bind):
        raise Refused(
            f"the dashboard would listen on {bind} (CHUMON_DASHBOARD__HOST or --host), beyond this machine, "
            "with no authentication: set CHUMON_DASHBOARD__USERNAME and CHUMON_DASHBOARD__PASSWORD, "
            "or listen on 127.0.0.1"
        )
    return Options(bind, port or config.port, username, password, config.allowed_hosts)


def serve(redis: Redis, settings: RuntimeSettings, opts: Options) -> None:
    """Serve until SIGTERM or SIGINT."""
    guard = Guard.of(opts.host, opts.allowed_hosts, opts.username, opts.password)
    server = create_server(
        make_app(redis, settings, guard), host=opts.host, port=opts.port, threads=THREADS, ident="chumon"
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # waitress shuts down on SystemExit
    names = ", ".join(sorted(guard.allowed_hosts)) + " and any IP address"
    log.info(
        "dashboard on http://%s:%d for Redis at %s; basic auth %s; answers to %s",
        opts.host,
        opts.port,
        mask_url(settings.redis_url),
        "on" if opts.username else "off (loopback only)",
        names,
    )
    server.run()
    log.info("dashboard stopped")
