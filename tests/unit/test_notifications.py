"""Rendering of the customer emails, and how SmtpMailer classifies what smtplib raises.

smtplib.SMTP is replaced by a fake that records calls and raises what a test asks for; the
real protocol is exercised in tests/integration/test_smtp.py.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import Message
from email.parser import BytesParser
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from orders.config import SmtpConfig
from orders.errors import MailRejected, MailTransient, PartyBusy
from orders.model import Order
from orders.notifications import (
    PARSE_POLICY,
    Email,
    SmtpMailer,
    cancellation_email,
    confirmation_email,
    message_id,
    parse_message,
)

PASSWORD = "hunter2-very-secret"


def make_order(**overrides: Any) -> Order:
    fields: dict[str, Any] = {
        "id": "ord-42",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "ship_to": "12 Analytical Row\nLondon N1",
        "lines": [
            {"sku": "BOOK-1", "quantity": 2, "unit_price": 1999},
            {"sku": "PEN", "quantity": 10, "unit_price": 5},
        ],
        "currency": "EUR",
        "total": 2 * 1999 + 10 * 5,
        "payment_token": "tok_ok",
        "correlation_id": "corr-1",
        "placed_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
    }
    fields.update(overrides)
    return Order.model_validate(fields)


# -- rendering ------------------------------------------------------------------------------------


def test_message_id_is_deterministic_per_kind_and_order() -> None:
    assert message_id("confirmation", "ord-42", "shop.example") == "<confirmation.ord-42@shop.example>"
    assert message_id("confirmation", "ord-42", "shop.example") == message_id(
        "confirmation", "ord-42", "shop.example"
    )
    assert message_id("cancellation", "ord-42", "shop.example") != message_id(
        "confirmation", "ord-42", "shop.example"
    )


def test_message_id_encodes_characters_a_message_id_cannot_hold() -> None:
    assert (
        message_id("confirmation", "a b@c<d>%", "x.example") == "<confirmation.a%20b%40c%3Cd%3E%25@x.example>"
    )


def test_rendering_twice_gives_the_same_email() -> None:
    order = make_order()
    assert confirmation_email(order, "shop.example") == confirmation_email(order, "shop.example")


def test_confirmation_names_customer_lines_total_and_address() -> None:
    email = confirmation_email(make_order(), "shop.example")

    assert email.kind == "confirmation"
    assert email.order_id == "ord-42"
    assert email.to == "ada@example.com"
    assert email.to_name == "Ada Lovelace"
    assert email.message_id == "<confirmation.ord-42@shop.example>"
    assert "ord-42" in email.subject
    assert email.body.startswith("Hello Ada Lovelace,")
    assert "2 x BOOK-1" in email.body
    assert "EUR 19.99" in email.body and "EUR 39.98" in email.body  # unit price and line total
    assert "EUR 0.05" in email.body and "EUR 0.50" in email.body  # minor units, not floats
    assert "Total" in email.body and "EUR 40.48" in email.body
    assert "  12 Analytical Row\n  London N1" in email.body


def test_confirmation_table_is_aligned() -> None:
    body = confirmation_email(make_order(), "shop.example").body
    table = [line for line in body.splitlines() if line.endswith(("EUR 39.98", "EUR 0.50", "EUR 40.48"))]
    assert len(table) == 3
    assert len({len(line) for line in table}) == 1, table


def test_cancellation_states_the_reason_kindly_and_the_refund() -> None:
    email = cancellation_email(make_order(), "payment declined", "shop.example")

    assert email.kind == "cancellation"
    assert email.message_id == "<cancellation.ord-42@shop.example>"
    assert "cancelled" in email.subject
    assert email.body.startswith("Hello Ada Lovelace,")
    assert "sorry" in email.body
    assert "The reason: Payment declined." in email.body
    assert "refunded" in email.body
    assert "EUR 40.48" in email.body


def test_customer_name_is_one_line_in_the_header_fields() -> None:
    order = make_order(customer={"name": "Ada \t Lovelace", "email": "ada@example.com"})
    email = confirmation_email(order, "shop.example")
    assert email.to_name == "Ada Lovelace"


def test_email_refuses_header_fields_with_line_breaks() -> None:
    email = confirmation_email(make_order(), "shop.example")
    with pytest.raises(ValidationError, match="single line"):
        Email.model_validate({**email.model_dump(), "subject": "hi\r\nBcc: someone@example.com"})


# -- a fake smtplib -------------------------------------------------------------------------------


class FakeSMTP:
    """Stands in for smtplib.SMTP / SMTP_SSL; ``fail`` maps a method name to what it raises."""

    instances: list[FakeSMTP] = []
    fail: dict[str, BaseException] = {}

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None) -> None:
        if "connect" in self.fail:
            raise self.fail["connect"]
        self.host, self.port, self.timeout, self.context = host, port, timeout, context
        self.calls: list[tuple[str, Any]] = []
        self.sent: list[tuple[Message, str, list[str]]] = []
        self.closed = False
        FakeSMTP.instances.append(self)

    def __enter__(self) -> FakeSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def noop(self) -> tuple[int, bytes]:
        self._maybe_fail("noop")
        self.calls.append(("noop", None))
        return 250, b"OK"

    def quit(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def starttls(self, context: ssl.SSLContext | None = None) -> None:
        self._maybe_fail("starttls")
        self.calls.append(("starttls", context))

    def login(self, user: str, password: str) -> None:
        self._maybe_fail("login")
        self.calls.append(("login", (user, password)))

    def send_message(self, msg: Message, from_addr: str, to_addrs: list[str]) -> dict[str, Any]:
        self._maybe_fail("send_message")
        self.sent.append((msg, from_addr, to_addrs))
        return {}


class FakeSMTPSSL(FakeSMTP):
    pass


@pytest.fixture
def fake_smtp(monkeypatch: pytest.MonkeyPatch) -> type[FakeSMTP]:
    FakeSMTP.instances = []
    FakeSMTP.fail = {}
    monkeypatch.setattr(smtplib, "SMTP", FakeSMTP)
    monkeypatch.setattr(smtplib, "SMTP_SSL", FakeSMTPSSL)
    return FakeSMTP


def config(**overrides: Any) -> SmtpConfig:
    return SmtpConfig(host="mail.test", port=2525, **overrides)


def an_email() -> Email:
    return confirmation_email(make_order(), "shop.example")


# -- sending --------------------------------------------------------------------------------------


def test_send_builds_the_message_and_reports_it(fake_smtp: type[FakeSMTP]) -> None:
    mailer = SmtpMailer(config(timeout=3.5), clock=lambda: 1_700_000_123.0)
    sent = mailer.send(an_email())

    (smtp,) = fake_smtp.instances
    assert (smtp.host, smtp.port, smtp.timeout) == ("mail.test", 2525, 3.5)
    assert smtp.calls == []  # no TLS, no login
    ((raw, from_addr, to_addrs),) = smtp.sent
    msg = BytesParser(policy=PARSE_POLICY).parsebytes(raw.as_bytes())  # as the server reads it
    assert from_addr == "orders@chumon.example"
    assert to_addrs == ["ada@example.com"]
    assert msg["From"] == "Chumon Shop <orders@chumon.example>"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Subject"] == "Your order ord-42 is confirmed"
    assert msg["Message-ID"] == "<confirmation.ord-42@shop.example>"
    assert msg["Date"] == "Tue, 14 Nov 2023 22:15:23 +0000"
    assert msg["X-Chumon-Order"] == "ord-42"
    assert msg["X-Chumon-Kind"] == "confirmation"
    assert msg.get_content_type() == "text/plain"
    assert "EUR 40.48" in msg.get_content()
    assert smtp.closed  # by default, a connection per email
    assert sent.model_dump() == {
        "kind": "confirmation",
        "order_id": "ord-42",
        "message_id": "<confirmation.ord-42@shop.example>",
        "to": "ada@example.com",
        "sent_at": 1_700_000_123.0,
    }


def test_a_connection_is_kept_and_checked_before_the_next_email(fake_smtp: type[FakeSMTP]) -> None:
    mailer = SmtpMailer(config(keep_alive=30))
    mailer.send(an_email())
    mailer.send(an_email())

    (smtp,) = fake_smtp.instances
    assert len(smtp.sent) == 2 and smtp.calls == [("noop", None)] and not smtp.closed
    mailer.close()
    assert smtp.closed


def test_a_kept_connection_that_does_not_answer_is_replaced(fake_smtp: type[FakeSMTP]) -> None:
    mailer = SmtpMailer(config(keep_alive=30))
    mailer.send(an_email())
    fake_smtp.fail = {"noop": smtplib.SMTPServerDisconnected("Connection unexpectedly closed")}
    mailer.send(an_email())

    first, second = fake_smtp.instances
    assert first.closed and len(first.sent) == 1
    assert not second.closed and len(second.sent) == 1


def test_a_failed_send_drops_its_connection(fake_smtp: type[FakeSMTP]) -> None:
    mailer = SmtpMailer(config(keep_alive=30))
    fake_smtp.fail = {"send_message": smtplib.SMTPDataError(451, b"4.3.0 try again later")}
    with pytest.raises(MailTransient):
        mailer.send(an_email())
    fake_smtp.fail = {}
    mailer.send(an_email())

    first, second = fake_smtp.instances
    assert first.closed and not first.sent
    assert len(second.sent) == 1 and second.calls == []  # a new connection, not checked with NOOP


def test_an_idle_connection_is_not_reused(fake_smtp: type[FakeSMTP], monkeypatch: pytest.MonkeyPatch) -> None:
    mailer = SmtpMailer(config(keep_alive=0.001))
    mailer.send(an_email())
    clock = time.monotonic() + 1
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    mailer.send(an_email())

    first, second = fake_smtp.instances
    assert first.closed and first.calls == [] and len(second.sent) == 1


def test_starttls_and_login(fake_smtp: type[FakeSMTP]) -> None:
    context = ssl.create_default_context()
    mailer = SmtpMailer(
        config(tls="starttls", username="shop", password=SecretStr(PASSWORD)), ssl_context=context
    )
    mailer.send(an_email())

    (smtp,) = fake_smtp.instances
    assert smtp.calls == [("starttls", context), ("login", ("shop", PASSWORD))]


def test_starttls_verifies_certificates_by_default(fake_smtp: type[FakeSMTP]) -> None:
    SmtpMailer(config(tls="starttls")).send(an_email())

    ((name, context),) = fake_smtp.instances[0].calls
    assert name == "starttls"
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_ssl_mode_uses_smtp_ssl(fake_smtp: type[FakeSMTP]) -> None:
    SmtpMailer(config(tls="ssl")).send(an_email())

    (smtp,) = fake_smtp.instances
    assert isinstance(smtp, FakeSMTPSSL)
    assert smtp.context is not None and smtp.context.verify_mode is ssl.CERT_REQUIRED
    assert smtp.calls == []


def test_username_without_password_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="password"):
        SmtpMailer(config(username="shop"))


TRANSIENT = [
    ("connect", ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
    ("connect", TimeoutError("timed out"), "timed out"),
    ("connect", smtplib.SMTPConnectError(554, b"5.3.2 no service right now"), "554 5.3.2 no service"),
    ("send_message", ConnectionResetError(104, "Connection reset by peer"), "reset by peer"),
    ("send_message", smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), "unexpectedly"),
    ("send_message", smtplib.SMTPDataError(451, b"4.3.0 try again later"), "451 4.3.0 try again later"),
    ("send_message", smtplib.SMTPSenderRefused(450, b"4.1.8 later", "orders@x"), "450 4.1.8 later"),
    (
        "send_message",
        smtplib.SMTPRecipientsRefused({"ada@example.com": (452, b"4.2.2 mailbox full")}),
        "ada@example.com: 452 4.2.2 mailbox full",
    ),
    ("login", smtplib.SMTPAuthenticationError(454, b"4.7.0 auth unavailable"), "454 4.7.0 auth unavailable"),
]

REJECTED = [
    ("send_message", smtplib.SMTPDataError(554, b"5.7.1 looks like spam"), "554 5.7.1 looks like spam"),
    ("send_message", smtplib.SMTPSenderRefused(553, b"5.7.1 not yours", "orders@x"), "553 5.7.1 not yours"),
    (
        "send_message",
        smtplib.SMTPRecipientsRefused({"ada@example.com": (550, b"5.1.1 no such user")}),
        "ada@example.com: 550 5.1.1 no such user",
    ),
    (
        "send_message",
        smtplib.SMTPRecipientsRefused({"a@example.com": (450, b"busy"), "b@example.com": (550, b"gone")}),
        "b@example.com: 550 gone",
    ),
    ("login", smtplib.SMTPAuthenticationError(535, b"5.7.8 credentials invalid"), "535 5.7.8 credentials"),
    ("starttls", smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), "STARTTLS"),
]


def test_a_421_asks_every_worker_to_slow_down(fake_smtp: type[FakeSMTP]) -> None:
    fake_smtp.fail = {"send_message": smtplib.SMTPResponseException(421, b"4.7.0 slow down")}
    mailer = SmtpMailer(
        config(tls="starttls", username="shop", password=SecretStr(PASSWORD), busy_retry_after=7)
    )
    with pytest.raises(PartyBusy) as caught:
        mailer.send(an_email())
    assert caught.value.retry_after == 7 and "421 4.7.0 slow down" in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(("where", "error", "named"), TRANSIENT)
def test_transient_failures(fake_smtp: type[FakeSMTP], where: str, error: BaseException, named: str) -> None:
    fake_smtp.fail = {where: error}
    mailer = SmtpMailer(config(tls="starttls", username="shop", password=SecretStr(PASSWORD)))

    with pytest.raises(MailTransient) as caught:
        mailer.send(an_email())

    assert named in str(caught.value)
    assert "mail.test:2525" in str(caught.value)
    assert "<confirmation.ord-42@shop.example>" in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(("where", "error", "named"), REJECTED)
def test_permanent_failures(fake_smtp: type[FakeSMTP], where: str, error: BaseException, named: str) -> None:
    fake_smtp.fail = {where: error}
    mailer = SmtpMailer(config(tls="starttls", username="shop", password=SecretStr(PASSWORD)))

    with pytest.raises(MailRejected) as caught:
        mailer.send(an_email())

    assert named in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert not isinstance(caught.value, MailTransient)


def test_password_echoed_by_a_server_is_masked(fake_smtp: type[FakeSMTP]) -> None:
    fake_smtp.fail = {
        "login": smtplib.SMTPAuthenticationError(535, f"5.7.8 bad password {PASSWORD}".encode())
    }
    mailer = SmtpMailer(config(username="shop", password=SecretStr(PASSWORD)))

    with pytest.raises(MailRejected) as caught:
        mailer.send(an_email())

    assert PASSWORD not in str(caught.value)
    assert "bad password ***" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert PASSWORD not in repr(mailer.config)


@pytest.mark.parametrize(
    ("to", "to_name", "subject", "body"),
    [
        ("ada@example.com", "Ada Lovelace", "Your order ord-1 is confirmed", "Plain ASCII.\n"),
        ("ada@example.com", 'Ada "the" Lövelace, Countess', "Bestellung ord-1 bestätigt — " + "lang " * 20,
         "Grüße\n" + "x" * 120 + "\n= and a trailing space \n"),
        ("ada@example.com", "Émile Zola", "  é  " * 40, "é" * 300 + "\n"),
        ("zoë@example.com", "Zoë", "Bestellung ord-1 bestätigt — " + "lang " * 20,
         "Grüße\n" + "x" * 120 + "\n"),
    ],
    ids=["ascii", "encoded-words", "long-non-ascii", "smtputf8-address"],
)  # fmt: skip
def test_a_built_message_reads_back_as_written(to: str, to_name: str, subject: str, body: str) -> None:
    """What the server parses (with the sink's policy) is what the email says; no line is longer
    than SMTP allows. An ASCII address takes the classic message API, one that needs SMTPUTF8 the
    modern one: both read back the same."""
    email = Email(kind="confirmation", order_id="ord-1", to=to, to_name=to_name, subject=subject, body=body,
                  message_id="<confirmation.ord-1@shop.example>")  # fmt: skip
    message = SmtpMailer(config()).build_message(email)
    raw = message.as_bytes()
    parsed = parse_message(raw)
    assert parsed["Subject"] == subject and parsed["Message-ID"] == email.message_id
    (address,) = parsed["To"].addresses
    assert (address.display_name, address.addr_spec) == (to_name, to)
    assert parsed.get_content().replace("\r\n", "\n") == body
    assert max(len(line) for line in raw.split(b"\n")) <= 998
