"""Emails to customers: what they say, and how they are sent over SMTP.

Rendering is pure: an order in, an :class:`Email` out. Every email carries a Message-ID
derived from the order id and the kind of email, so a retry or a duplicate delivery sends
the very same Message-ID and a receiver can drop the copy.

Addresses: an address whose local part is ASCII is sent as ASCII (an international domain
name goes out in its IDNA form, ``ada@xn--bcher-kva.example``), so any server takes it. One
whose local part is not ASCII (``ü@example.com``) is sent with SMTPUTF8 (RFC 6531), which the
server must offer; with ``CHUMON_SMTP__SMTPUTF8=false`` such addresses are refused when the
order is placed instead (``orders.model.Customer``).

Sending classifies the mail server's answer for the job runtime: "try again later" (a 4xx
reply, a server that cannot be reached or drops the connection) raises
:class:`~orders.errors.MailTransient`, which the job turns into a retry with backoff; a
definite "no" (a 5xx reply) raises :class:`~orders.errors.MailRejected`, which ends up in
the dead-letter queue.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser, Parser
from email.policy import SMTP, SMTPUTF8, EmailPolicy
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, formatdate, parseaddr
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, field_validator

from orders.config import SmtpConfig
from orders.errors import MailRejected, MailTransient, PartyBusy
from orders.model import EmailAddress, Order
from orders.money import format_amount

EmailKind = Literal["confirmation", "cancellation"]

SIGNATURE = "Kind regards,\nThe Chumon Shop team"

# RFC 5322 atext without '%': everything else in an id is percent-encoded (deterministically).
_ATEXT = "!#$&'*+-/=?^_`{|}~."


class Email(BaseModel):
    """One email to one customer, ready to send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EmailKind
    order_id: str
    to: EmailAddress
    to_name: str
    subject: str
    body: str
    message_id: str

    @field_validator("order_id", "to_name", "subject", "message_id")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be a single line (it goes into a header)")
        return value


class SentEmail(BaseModel):
    """What the mail server accepted, and when."""

    model_config = ConfigDict(frozen=True)

    kind: EmailKind
    order_id: str
    message_id: str
    to: str
    sent_at: float


class Mailer(Protocol):
    def send(self, email: Email) -> SentEmail:
        """Hand ``email`` to the mail server; raise MailTransient or MailRejected if it is not taken."""
        ...


# -- rendering ------------------------------------------------------------------------------------


def message_id(kind: str, order_id: str, domain: str) -> str:
    """``'confirmation', 'o-1', 'shop.example'`` -> ``'<confirmation.o-1@shop.example>'``.

    The same inputs always give the same Message-ID; characters that may not appear in one
    are percent-encoded.
    """
    return f"<{quote(kind, safe=_ATEXT)}.{quote(order_id, safe=_ATEXT)}@{domain}>"


def confirmation_email(order: Order, domain: str) -> Email:
    name = _one_line(order.customer.name)
    body = "\n".join(
        [
            f"Hello {name},",
            "",
            f"Thank you for your order {order.id}. It is confirmed and we are getting it ready.",
            "",
            *_order_summary(order),
            "",
            "We will ship it to:",
            *_indented(order.ship_to),
            "",
            "We will write again when it is on its way.",
            "",
            SIGNATURE,
        ]
    )
    return _email("confirmation", order, f"Your order {order.id} is confirmed", body, domain)


def cancellation_email(order: Order, reason: str, domain: str) -> Email:
    name = _one_line(order.customer.name)
    body = "\n".join(
        [
            f"Hello {name},",
            "",
            f"We are sorry: we could not complete your order {order.id} and have cancelled it.",
            "",
            f"The reason: {_sentence(reason)}",
            "",
            "If you were charged for this order, the full amount has been refunded to you;",
            "you do not need to do anything.",
            "",
            "The order was for:",
            "",
            *_order_summary(order),
            "",
            "We apologise for the inconvenience and hope to see you again.",
            "",
            SIGNATURE,
        ]
    )
    return _email("cancellation", order, f"Your order {order.id} has been cancelled", body, domain)


def _email(kind: EmailKind, order: Order, subject: str, body: str, domain: str) -> Email:
    return Email(
        kind=kind,
        order_id=order.id,
        to=order.customer.email,
        to_name=_one_line(order.customer.name),
        subject=subject,
        body=body,
        message_id=message_id(kind, order.id, domain),
    )


def _order_summary(order: Order) -> list[str]:
    """The lines as an aligned table (quantity, SKU, unit price, line total), then the total."""
    rows = [
        (
            str(line.quantity),
            line.sku,
            format_amount(line.unit_price, order.currency),
            format_amount(line.total, order.currency),
        )
        for line in order.lines
    ]
    total = format_amount(order.total, order.currency)
    qty, sku, unit, amount = (max(len(row[i]) for row in rows) for i in range(4))
    amount = max(amount, len(total))
    table = [f"  {q:>{qty}} x {s:<{sku}}  at {u:>{unit}}  {a:>{amount}}" for q, s, u, a in rows]
    label_width = qty + 3 + sku + 5 + unit
    return [*table, f"  {'Total':<{label_width}}  {total:>{amount}}"]


def deliverable(address: str) -> str:
    """The address as it goes on the wire: ASCII whenever the local part is (the domain in its
    IDNA form); else unchanged, to be sent with SMTPUTF8."""
    local, _, domain = address.rpartition("@")
    if not local.isascii() or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:  # not expressible in IDNA 2003: leave it to SMTPUTF8
        return address


def _indented(text: str) -> list[str]:
    return ["  " + line.strip() for line in text.splitlines() if line.strip()]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sentence(text: str) -> str:
    text = _one_line(text).rstrip(". ") or "we were unable to process it"
    return text[0].upper() + text[1:] + "."


# -- sending --------------------------------------------------------------------------------------
class SharedHeaderClasses(HeaderRegistry):
    """The standard header registry, making each header's class once instead of on every header.

    ``HeaderRegistry.__getitem__`` builds a new class (``type(...)``) each time a header is set
    or parsed: half the time it takes to build an email (measured: 1,160 µs with the stock
    registry, 586 µs with this one, per confirmation email built and flattened). The classes
    are the same every time, so they are made once per name. Thread-safe: a race makes a class
    twice, and either copy is right.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


def sharing(policy: EmailPolicy[EmailMessage]) -> EmailPolicy[EmailMessage]:
    """``policy`` with header classes made once (``SharedHeaderClasses``); otherwise the same."""
    return policy.clone(header_factory=SharedHeaderClasses())


UTF8_QUOTED_PRINTABLE = Charset("utf-8")
UTF8_QUOTED_PRINTABLE.body_encoding = QP  # a body mostly ASCII stays readable on the wire

SMTP_POLICY = sharing(SMTP)
SMTPUTF8_POLICY = sharing(SMTPUTF8)
PARSE_POLICY = sharing(default_policy)
"""The policies emails are built with (ASCII, SMTPUTF8) and parsed with (the SMTP sink)."""


def parse_message(raw: bytes, *, headers_only: bool = False) -> Message:
    """A received message as its recipient reads it. A message sent with SMTPUTF8 (RFC 6532)
    carries its headers in raw UTF-8, which the stdlib's bytes parser would read as escaped
    bytes ('Zo\\udcc3\\udcab' for 'Zoë'): a message that is UTF-8 is parsed as text; any other
    (8-bit bytes of another charset) as bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BytesParser(policy=PARSE_POLICY).parsebytes(raw, headersonly=headers_only)
    return Parser(policy=PARSE_POLICY).parsestr(text, headersonly=headers_only)


class SmtpMailer:
    """Sends emails over SMTP with the standard library's ``smtplib``.

    smtplib is part of CPython and well kept; it does the protocol, STARTTLS and AUTH. This
    class adds the message's headers, the TLS mode and the classification of failures:

    - 4xx replies, a refused or reset connection, a timeout, a dropped connection:
      :class:`MailTransient` (retry later);
    - 5xx replies, and a server that lacks what the configuration asks for (STARTTLS, AUTH):
      :class:`MailRejected` (retrying would not help).

    With ``config.keep_alive`` seconds (``CHUMON_SMTP__KEEP_ALIVE``; default 0: a connection
    per email), each thread keeps its connection for its next email, for up to that long
    (connecting, EHLO and QUIT cost as much as the message, on both sides). A kept
    connection is checked with NOOP before it carries a message; one that does not answer
    250 is dropped and a new one opened, before anything of the message is sent. A send that
    fails in any way drops its connection, so a retry always starts afresh, and the failure is
    classified as before. One mailer may be shared by threads. The password never appears in a
    log line or an exception message (which is also why the exceptions raised here do not chain
    smtplib's: they name its code and reply instead).
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ssl_context`` defaults to ``ssl.create_default_context()`` (system CAs, host name checked)."""
        if config.username and config.password is None:
            raise ValueError("SMTP username is set but the password is not")
        self.config = config
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._clock = clock
        self._envelope_sender = parseaddr(config.sender)[1] or config.sender
        self._sender_header = formataddr(parseaddr(config.sender), charset="utf-8")
        self._kept = threading.local()  # .smtp, .idle_since: this thread's open connection
        self._open: set[smtplib.SMTP] = set()  # every thread's, closed when the mailer goes
        self._lock = threading.Lock()

    def send(self, email: Email) -> SentEmail:
        message = self.build_message(email)
        if not self.config.keep_alive:
            return self._send_alone(email, message)
        try:
            smtp = self._connection()
            try:
                refused = smtp.send_message(message, self._envelope_sender, [deliverable(str(email.to))])
            except BaseException:
                self._drop()
                raise
        except (smtplib.SMTPException, OSError) as exc:
            raise self._classify(exc, email) from None
        self._kept.idle_since = time.monotonic()
        return self._sent(email, refused)

    def build_message(self, email: Email) -> Message:
        """The email as a MIME message. To an ASCII address (the common case) it is built with the
        standard library's classic API (``email.message.Message``, policy compat32): the same
        headers and body as the modern API's, decoded, at a sixth of the cost (measured: 295
        against 1,831 µs per confirmation built and flattened; the modern API parses every
        header it is given into tokens, and again to fold it). An address that needs SMTPUTF8
        takes the modern API, which the classic one cannot express."""
        to = deliverable(str(email.to))
        if to.isascii() and self._envelope_sender.isascii():
            return self._classic_message(email, to)
        message = EmailMessage(policy=SMTP_POLICY if to.isascii() else SMTPUTF8_POLICY)
        local, _, domain = to.rpartition("@")
        message["From"] = self.config.sender
        message["To"] = Address(display_name=email.to_name, username=local, domain=domain)
        message["Subject"] = email.subject
        message["Date"] = formatdate(self._clock(), usegmt=True)
        message["Message-ID"] = email.message_id
        message["X-Chumon-Order"] = email.order_id
        message["X-Chumon-Kind"] = email.kind
        message.set_content(email.body)
        return message

    def _classic_message(self, email: Email, to: str) -> Message:
        # headers in the order given; a display name or subject with non-ASCII encoded (RFC 2047)
        message: Message[Any, Any] = Message()
        message["From"] = self._sender_header
        message["To"] = formataddr((email.to_name, to), charset="utf-8")
        if email.subject.isascii():
            message["Subject"] = email.subject
        else:  # encoded as it is written out, knowing its name's length: no fold before it
            message["Subject"] = Header(email.subject, "utf-8", header_name="Subject")
        message["Date"] = format_datetime(
            datetime.fromtimestamp(self._clock(), UTC)
        )  # +0000, as the modern API
        message["Message-ID"] = email.message_id
        message["X-Chumon-Order"] = email.order_id
        message["X-Chumon-Kind"] = email.kind
        message["MIME-Version"] = "1.0"
        message.set_payload(email.body, "us-ascii" if email.body.isascii() else UTF8_QUOTED_PRINTABLE)
        return message

    def _send_alone(self, email: Email, message: Message) -> SentEmail:
        """Send on a connection of its own, closed after it."""
        try:
            with self._connect() as smtp:
                self._secure_and_login(smtp)
                refused = smtp.send_message(message, self._envelope_sender, [deliverable(str(email.to))])
        except (smtplib.SMTPException, OSError) as exc:
            raise self._classify(exc, email) from None
        return self._sent(email, refused)

    def _sent(self, email: Email, refused: Mapping[str, tuple[int, bytes]]) -> SentEmail:
        if refused:  # only possible with several recipients: kept for completeness
            raise self._classify(smtplib.SMTPRecipientsRefused(dict(refused)), email)
        return SentEmail(
            kind=email.kind,
            order_id=email.order_id,
            message_id=email.message_id,
            to=str(email.to),
            sent_at=self._clock(),
        )

    def _connection(self) -> smtplib.SMTP:
        """This thread's kept connection if it still answers NOOP, else a new one (kept)."""
        kept: smtplib.SMTP | None = getattr(self._kept, "smtp", None)
        if kept is not None:
            if time.monotonic() - self._kept.idle_since < self.config.keep_alive:
                try:
                    if kept.noop()[0] == 250:
                        return kept
                except (smtplib.SMTPException, OSError):
                    pass
            self._drop()
        smtp = self._connect()
        try:
            self._secure_and_login(smtp)
        except BaseException:
            smtp.close()
            raise
        self._kept.smtp, self._kept.idle_since = smtp, time.monotonic()
        with self._lock:
            self._open.add(smtp)
        return smtp

    def _drop(self) -> None:
        """Close this thread's kept connection, politely if it still answers."""
        smtp: smtplib.SMTP | None = getattr(self._kept, "smtp", None)
        self._kept.smtp = None
        if smtp is None:
            return
        with self._lock:
            self._open.discard(smtp)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def close(self) -> None:
        """Close the calling thread's kept connection, and the sockets of the other threads'."""
        self._drop()
        self._close_all()

    def __del__(self) -> None:
        if hasattr(self, "_lock"):  # not when __init__ refused the configuration
            self._close_all()

    def _close_all(self) -> None:
        """Close every kept connection's socket (no QUIT: a finalizer talks to no server)."""
        with self._lock:
            kept, self._open = self._open, set()
        for smtp in kept:
            smtp.close()

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.tls == "ssl":
            return smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=self._ssl_context)
        return smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)

    def _secure_and_login(self, smtp: smtplib.SMTP) -> None:
        if self.config.tls == "starttls":
            smtp.starttls(context=self._ssl_context)
        if self.config.username and self.config.password is not None:
            smtp.login(self.config.username, self.config.password.get_secret_value())

    # -- failures ---------------------------------------------------------------------------------

    def _classify(self, exc: BaseException, email: Email) -> MailTransient | MailRejected | PartyBusy:
        where = f"{self.config.host}:{self.config.port}"
        what = f"{email.kind} email {email.message_id} for order {email.order_id}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._refused_recipients(exc.recipients, where, what)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return MailTransient(f"{where} closed the connection while sending {what}: {self._scrub(exc)}")
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply(exc, where, what)
        if isinstance(exc, smtplib.SMTPNotSupportedError):  # no SMTPUTF8 for a non-ASCII address
            return MailRejected(
                f"{where} cannot send {what}: {self._scrub(exc)} (set CHUMON_SMTP__SMTPUTF8=false to "
                "refuse such addresses when orders are placed)"
            )
        if isinstance(exc, smtplib.SMTPException):  # STARTTLS or AUTH not offered: configuration
            return MailRejected(f"{where} cannot send {what}: {self._scrub(exc)}")
        return MailTransient(f"could not talk to {where} while sending {what}: {type(exc).__name__}: {exc}")

    def _reply(
        self, exc: smtplib.SMTPResponseException, where: str, what: str
    ) -> MailTransient | MailRejected | PartyBusy:
        code, reply = exc.smtp_code, self._scrub(exc.smtp_error)
        text = f"{where} answered {code} {reply} to {what}"
        if code == 421:  # the server is shedding load: every worker waits, no attempt is used
            return PartyBusy(text, retry_after=self.config.busy_retry_after)
        if isinstance(exc, smtplib.SMTPConnectError) or not 500 <= code < 600:
            return MailTransient(text)
        return MailRejected(text)

    def _refused_recipients(
        self, recipients: Mapping[str, tuple[int, bytes | str]], where: str, what: str
    ) -> MailTransient | MailRejected:
        replies = "; ".join(
            f"{rcpt}: {code} {self._scrub(reply)}" for rcpt, (code, reply) in recipients.items()
        )
        text = f"{where} refused the recipient of {what}: {replies}"
        if recipients and all(400 <= code < 500 for code, _ in recipients.values()):
            return MailTransient(text)
        return MailRejected(text)

    def _scrub(self, value: object) -> str:
        """The server's reply as text, with the password masked should a server ever echo it."""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        secret = self.config.password.get_secret_value() if self.config.password else ""
        return text.replace(secret, "***") if secret else text
