"""A local SMTP server that accepts the shop's emails and keeps a record of them.

For development, the demo and the tests: it speaks real SMTP (it is aiosmtpd's server), so
the shop sends through the same ``smtplib`` code path it uses in production. Nothing is
delivered anywhere. Each accepted message is recorded as JSON::

    {"message_id", "mail_from", "rcpt_tos", "subject", "order_id", "kind", "received_at", "size"}

in memory and, when the sink has a Redis client, appended to the list
``OrderKeys.smtp_sink("messages")`` (``chumon:smtp-sink:messages``) so that other
processes can count deliveries (:func:`read_messages`).

Behaviours chosen by the recipient's local part, like a hosted test SMTP service:

- ``tempfail...@`` (``tempfail@x``, ``tempfail+7@x``): the first delivery attempt of each
  Message-ID is answered ``451 4.3.0 try again later`` at the end of DATA (the Message-ID
  is only known then); later attempts of the same Message-ID are accepted. Which
  Message-IDs were deferred is remembered in memory and, with Redis, in the set
  ``smtp_sink("tempfailed")``, so a restarted sink does not defer them again.
- ``slowdown...@``: the first delivery attempt of each Message-ID is answered ``421 4.7.0 too
  many messages, slow down`` at the end of DATA (a server rate-limiting its clients).
- ``bounce...@``: ``550 5.1.1 mailbox unavailable`` at RCPT, always.
- ``slowrcpt...@``: the reply to RCPT comes ``slow_reply`` seconds late (1 s): the sender waits
  before it has sent anything of the message.
- ``slowack...@``: the message is recorded at once, the ``250`` to DATA comes ``slow_reply``
  seconds later: a slow server, or a reply lost on its way. The sender's crash window
  (docs/orders.md) is then that wide, for the tests that measure it.
- anything else: accepted.

The sink offers SMTPUTF8 (RFC 6531: addresses with a non-ASCII local part) unless built with
``smtputf8=False``. Other switches: ``tls_context`` offers STARTTLS, ``implicit_tls=True`` speaks TLS from the
first byte instead (SMTPS); ``credentials=(user, password)`` offers AUTH (PLAIN, LOGIN) and
refuses MAIL from a client that has not logged in (``530``). Without credentials AUTH is only
offered after STARTTLS and always fails. If Redis cannot be written, the message is
answered ``451`` (not recorded anywhere), so the sender retries.

``python -m chumon.smtpsink [--host 127.0.0.1] [--port 8025]`` runs it as a process (for the
Procfile), recording to the Redis at ``REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import ssl
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from redis import Redis
from redis.exceptions import RedisError

from orders.keys import OrderKeys
from orders.notifications import parse_message

TEMPFAIL_PREFIX = "tempfail"
BOUNCE_PREFIX = "bounce"
SLOW_RCPT_PREFIX = "slowrcpt"
SLOW_ACK_PREFIX = "slowack"
TEMPFAIL_REPLY = "451 4.3.0 try again later"
BUSY_PREFIX = "slowdown"
BUSY_REPLY = "421 4.7.0 too many messages, slow down"
BOUNCE_REPLY = "550 5.1.1 mailbox unavailable"
STORAGE_REPLY = "451 4.3.0 sink storage unavailable, try again later"
AUTH_REQUIRED_REPLY = "530 5.7.0 authentication required"
SERVER_NAME = "smtp-sink.chumon.example"


def local_part(address: str) -> str:
    return address.rpartition("@")[0].lower() if "@" in address else address.lower()


def read_messages(redis: Redis, keys: OrderKeys) -> list[dict[str, Any]]:
    """Every message a sink recorded in Redis, oldest first (from any process)."""
    return [json.loads(raw) for raw in redis.lrange(keys.smtp_sink("messages"), 0, -1)]


class _Store:
    """The records and the deferred Message-IDs, in memory and (optionally) in Redis."""

    def __init__(self, redis: Redis | None, keys: OrderKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._deferred: set[str] = set()

    def first_attempt(self, message_key: str) -> bool:
        """True the first time ``message_key`` is seen here (marking it seen)."""
        if self.redis is not None:
            return bool(self.redis.sadd(self.keys.smtp_sink("tempfailed"), message_key))
        with self._lock:
            first = message_key not in self._deferred
            self._deferred.add(message_key)
        return first

    def record(self, message: dict[str, Any]) -> None:
        if self.redis is not None:
            self.redis.rpush(self.keys.smtp_sink("messages"), json.dumps(message, separators=(",", ":")))
        with self._lock:
            self._messages.append(message)

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)


class _Handler:
    """aiosmtpd's handler hooks. They run on the controller's event loop thread."""

    def __init__(self, store: _Store, credentials: tuple[str, str] | None, slow_reply: float = 1.0) -> None:
        self.store = store
        self.credentials = credentials
        self.slow_reply = slow_reply

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.credentials is not None and not session.authenticated:
            return AUTH_REQUIRED_REPLY
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if local_part(address).startswith(BOUNCE_PREFIX):
            return BOUNCE_REPLY
        if local_part(address).startswith(SLOW_RCPT_PREFIX):
            await asyncio.sleep(self.slow_reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content: bytes = envelope.original_content or b""
        message = describe(envelope.mail_from or "", list(envelope.rcpt_tos), content)
        try:
            if self._defer(envelope.rcpt_tos, message["message_id"], content, TEMPFAIL_PREFIX):
                return TEMPFAIL_REPLY
            if self._defer(envelope.rcpt_tos, message["message_id"], content, BUSY_PREFIX):
                return BUSY_REPLY
            self.store.record(message)
        except RedisError:
            return STORAGE_REPLY
        if any(local_part(rcpt).startswith(SLOW_ACK_PREFIX) for rcpt in envelope.rcpt_tos):
            await asyncio.sleep(self.slow_reply)
        return f"250 2.0.0 OK {message['message_id'] or ''}".rstrip()

    def _defer(self, rcpt_tos: list[str], message_id: str | None, content: bytes, prefix: str) -> bool:
        """Whether this is the first attempt of a message whose recipient asks for ``prefix``'s answer."""
        if not any(local_part(rcpt).startswith(prefix) for rcpt in rcpt_tos):
            return False
        key = message_id or "sha256:" + hashlib.sha256(content).hexdigest()
        return self.store.first_attempt(f"{prefix}:{key}" if prefix != TEMPFAIL_PREFIX else key)

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator: the one login and password the sink was given."""
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == tuple(c.encode() for c in self.credentials)
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


RECORDED = ("Message-ID", "Subject", "X-Chumon-Order", "X-Chumon-Kind")
"""The headers a record keeps."""


def describe(mail_from: str, rcpt_tos: list[str], content: bytes) -> dict[str, Any]:
    """The record kept of one accepted message."""
    headers = _plain_headers(content)
    if headers is None:
        parsed = parse_message(content, headers_only=True)

        def header(name: str) -> str | None:
            value = parsed.get(name)
            return str(value).strip() if value is not None else None

        headers = {name: header(name) for name in RECORDED}
    return {
        "message_id": headers["Message-ID"],
        "mail_from": mail_from,
        "rcpt_tos": rcpt_tos,
        "subject": headers["Subject"],
        "order_id": headers["X-Chumon-Order"],
        "kind": headers["X-Chumon-Kind"],
        "received_at": time.time(),
        "size": len(content),
    }


def _plain_headers(content: bytes) -> dict[str, str | None] | None:
    """The recorded headers read straight from an ASCII header block whose recorded headers need
    no decoding (no encoded word, quoting, comment or escape; a Message-ID without blanks):
    each one's first occurrence, unfolded and stripped, as the stdlib's parser reads them. None
    for any other block, which ``parse_message`` reads: that parse cost the sink 200 µs per
    message, in the benchmark's own process."""
    end = content.find(b"\r\n\r\n")
    block = content[: end if end >= 0 else len(content)]
    if not block.isascii() or b"\n" in block.replace(b"\r\n", b""):
        return None  # a bare LF or CR ends or folds lines as the parser sees fit: leave it to it
    found: dict[str, str | None] = dict.fromkeys(RECORDED)
    current: str | None = None
    for line in block.decode("ascii").split("\r\n"):
        if line[:1] in (" ", "\t"):  # a folded line continues the header before it
            if current is not None:
                found[current] = f"{found[current]}{line}"
            continue
        name, colon, value = line.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            return None  # not a header line: the parser would start the body here
        current = _RECORDED_BY_NAME.get(name.lower())
        if current is not None and found[current] is not None:
            current = None  # a repeated header: the first one counts
        elif current is not None:
            found[current] = value
    plain = {name: None if raw is None else raw.strip() for name, raw in found.items()}
    for name, stripped in plain.items():
        if stripped is None:
            continue
        if _NEEDS_PARSING.search(stripped) or (name == "Message-ID" and _BLANK.search(stripped)):
            return None
    return plain


_RECORDED_BY_NAME = {name.lower(): name for name in RECORDED}
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_NEEDS_PARSING = re.compile(r'=\?|["()\\]')
_BLANK = re.compile(r"\s")


class _Controller(Controller):
    """aiosmtpd's threaded controller, able to listen on port 0 (a free port)."""

    def _trigger_server(self) -> None:
        # aiosmtpd connects to self.port to finish starting up: make it the bound port.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpSink:
    """An SMTP server on ``host:port`` in a background thread; see the module docstring.

    ``port=0`` picks a free port: :attr:`port` is the bound one once started. With ``redis``,
    records also go to Redis under ``keys`` (default: the default prefix).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        redis: Redis | None = None,
        keys: OrderKeys | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = True,
        slow_reply: float = 1.0,
    ) -> None:
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        self.host = host
        self._requested_port = port
        self._tls_context = tls_context
        self._implicit_tls = implicit_tls
        self._smtputf8 = smtputf8
        self._store = _Store(redis, keys or OrderKeys())
        self._handler = _Handler(self._store, credentials, slow_reply)
        self._controller: _Controller | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the SMTP sink is not running")
        return self._port

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("the SMTP sink is already running")
        controller = self._new_controller()
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            if not controller.loop.is_closed():  # its thread failed before running the loop
                controller.loop.close()
            raise
        self._controller = controller
        self._port = int(controller.port)

    def stop(self) -> None:
        controller, self._controller, self._port = self._controller, None, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def messages(self) -> list[dict[str, Any]]:
        """The messages this sink accepted, oldest first."""
        return self._store.messages()

    def unique_message_ids(self) -> set[str]:
        return {m["message_id"] for m in self.messages() if m["message_id"]}

    def count(self) -> int:
        return len(self.messages())

    def _new_controller(self) -> _Controller:
        starttls = self._tls_context if not self._implicit_tls else None
        return _Controller(
            self._handler,
            hostname=self.host,
            port=self._requested_port,
            server_hostname=SERVER_NAME,
            ssl_context=self._tls_context if self._implicit_tls else None,
            tls_context=starttls,
            authenticator=self._handler.authenticate,
            auth_require_tls=self._handler.credentials is None,
            enable_SMTPUTF8=self._smtputf8,
        )


# -- the process ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chumon.smtpsink", description="A local SMTP sink for development."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port (default 8025)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run a sink recording to the Redis at REDIS_URL until SIGTERM or SIGINT."""
    args = parse_args(argv)
    from chumon.app import redis_client
    from chumon.settings import load

    settings = load()
    redis = redis_client(settings.redis_url, settings.redis)
    try:
        redis.ping()
    except (RedisError, OSError) as exc:  # it answers 451 (try later) until Redis is back
        print(f"smtp-sink: Redis at REDIS_URL does not answer yet ({exc}); deferring mail until it does",
              file=sys.stderr)  # fmt: skip
    keys = OrderKeys(settings.key_prefix)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with SmtpSink(args.host, args.port, redis=redis, keys=keys) as sink:
            print(
                f"smtp-sink listening on {sink.host}:{sink.port}, recording to {keys.smtp_sink('messages')}",
                flush=True,
            )
            while not stopping.wait(1.0):
                pass
    finally:
        redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
