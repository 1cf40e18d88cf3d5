"""SmtpMailer against a real SMTP server: the local sink (aiosmtpd) on a free port."""

from __future__ import annotations

import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chumon.devredis import free_port
from chumon.smtpsink import BOUNCE_REPLY, STORAGE_REPLY, TEMPFAIL_REPLY, SmtpSink, read_messages
from orders.config import SmtpConfig
from orders.errors import MailRejected, MailTransient
from orders.keys import OrderKeys
from orders.model import Order
from orders.notifications import Email, SmtpMailer, cancellation_email, confirmation_email
from tests.support import ROOT, env_for, wait_until

DOMAIN = "shop.example"
PASSWORD = "s3cret-sink-password"


def make_order(order_id: str = "ord-1", email: str = "ada@example.com") -> Order:
    return Order.model_validate(
        {
            "id": order_id,
            "customer": {"name": "Ada Lovelace", "email": email},
            "ship_to": "12 Analytical Row, London",
            "lines": [{"sku": "BOOK-1", "quantity": 2, "unit_price": 1999}],
            "currency": "EUR",
            "total": 3998,
            "payment_token": "tok_ok",
            "correlation_id": "corr-1",
            "placed_at": 1_700_000_000.0,
            "updated_at": 1_700_000_000.0,
        }
    )


def email_to(address: str, order_id: str = "ord-1") -> Email:
    return confirmation_email(make_order(order_id, address), DOMAIN)


def mailer_for(sink: SmtpSink, **config: Any) -> SmtpMailer:
    context = config.pop("ssl_context", None)
    return SmtpMailer(SmtpConfig(port=sink.port, timeout=5.0, **config), ssl_context=context)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


# -- plain SMTP -----------------------------------------------------------------------------------


def test_delivery_reaches_the_sink_with_its_headers(sink: SmtpSink) -> None:
    email = email_to("ada@example.com")
    sent = mailer_for(sink).send(email)

    (message,) = sink.messages()
    assert message["message_id"] == "<confirmation.ord-1@shop.example>" == sent.message_id
    assert message["mail_from"] == "orders@chumon.example"
    assert message["rcpt_tos"] == ["ada@example.com"]
    assert message["subject"] == "Your order ord-1 is confirmed"
    assert message["order_id"] == "ord-1"
    assert message["kind"] == "confirmation"
    assert message["size"] > len(email.body)
    assert sink.count() == 1
    assert sink.unique_message_ids() == {"<confirmation.ord-1@shop.example>"}


def test_an_smtputf8_message_reads_back_in_the_sink_as_sent(sink: SmtpSink) -> None:
    """An address with a non-ASCII local part goes out with SMTPUTF8, its headers in raw UTF-8
    (RFC 6532): the sink must read them as UTF-8, not as escaped bytes."""
    email = email_to("zoë@example.com").model_copy(update={"subject": "Bestellung ord-1 bestätigt — Grüße"})
    mailer_for(sink).send(email)

    (message,) = sink.messages()
    assert message["rcpt_tos"] == ["zoë@example.com"]
    assert message["subject"] == "Bestellung ord-1 bestätigt — Grüße"
    assert message["order_id"] == "ord-1" and message["kind"] == "confirmation"


def test_a_duplicate_send_carries_the_same_message_id(sink: SmtpSink) -> None:
    mailer = mailer_for(sink)
    order = make_order()
    mailer.send(cancellation_email(order, "out of stock", DOMAIN))
    mailer.send(cancellation_email(order, "out of stock", DOMAIN))

    assert sink.count() == 2
    assert sink.unique_message_ids() == {"<cancellation.ord-1@shop.example>"}


def test_a_kept_connection_carries_the_next_emails_and_survives_a_refusal(sink: SmtpSink) -> None:
    mailer = mailer_for(sink, keep_alive=30)
    try:
        mailer.send(email_to("ada@example.com"))
        with pytest.raises(MailTransient):
            mailer.send(email_to("tempfail+2@example.com"))  # drops its connection
        mailer.send(email_to("tempfail+2@example.com"))
        mailer.send(email_to("bob@example.com"))
    finally:
        mailer.close()
    assert sink.count() == 3


def test_tempfail_defers_the_first_attempt_then_accepts(sink: SmtpSink) -> None:
    mailer = mailer_for(sink)
    email = email_to("tempfail+1@example.com")

    with pytest.raises(MailTransient, match=re.escape(TEMPFAIL_REPLY)):
        mailer.send(email)
    assert sink.count() == 0

    mailer.send(email)
    assert sink.unique_message_ids() == {email.message_id}


def test_tempfail_is_per_message_id(sink: SmtpSink) -> None:
    mailer = mailer_for(sink)
    first, second = email_to("tempfail@example.com", "ord-1"), email_to("tempfail@example.com", "ord-2")
    with pytest.raises(MailTransient):
        mailer.send(first)
    with pytest.raises(MailTransient):
        mailer.send(second)
    mailer.send(first)
    mailer.send(second)
    assert sink.unique_message_ids() == {first.message_id, second.message_id}


def test_bounce_is_rejected_for_good(sink: SmtpSink) -> None:
    mailer = mailer_for(sink)
    for _ in range(2):
        with pytest.raises(MailRejected, match=re.escape(BOUNCE_REPLY)):
            mailer.send(email_to("bounce@example.com"))
    assert sink.count() == 0


def test_nothing_listening_is_transient() -> None:
    mailer = SmtpMailer(SmtpConfig(port=free_port(), timeout=2.0))
    with pytest.raises(MailTransient, match="ConnectionRefusedError"):
        mailer.send(email_to("ada@example.com"))


def test_a_stopped_sink_frees_its_port_and_can_start_again() -> None:
    sink = SmtpSink()
    with sink:
        first_port = sink.port
    with pytest.raises(MailTransient):
        SmtpMailer(SmtpConfig(port=first_port, timeout=2.0)).send(email_to("ada@example.com"))
    with sink:
        mailer_for(sink).send(email_to("ada@example.com"))
    assert sink.count() == 1


def test_a_port_in_use_fails_to_start(sink: SmtpSink) -> None:
    with pytest.raises(OSError, match="address already in use"), SmtpSink(port=sink.port):
        pass


def test_starttls_asked_of_a_server_without_it_is_rejected(sink: SmtpSink) -> None:
    with pytest.raises(MailRejected, match="STARTTLS"):
        mailer_for(sink, tls="starttls").send(email_to("ada@example.com"))


# -- Redis ----------------------------------------------------------------------------------------


def test_messages_land_in_redis(redis: Redis) -> None:
    keys = OrderKeys("chumon")
    with SmtpSink(redis=redis, keys=keys) as sink:
        mailer = mailer_for(sink)
        mailer.send(email_to("ada@example.com", "ord-1"))
        mailer.send(cancellation_email(make_order("ord-2"), "payment declined", DOMAIN))

    stored = read_messages(redis, keys)
    assert stored == sink.messages()
    assert [m["message_id"] for m in stored] == [
        "<confirmation.ord-1@shop.example>",
        "<cancellation.ord-2@shop.example>",
    ]
    assert redis.llen("chumon:smtp-sink:messages") == 2


def test_tempfail_state_survives_a_sink_restart(redis: Redis) -> None:
    keys = OrderKeys("chumon")
    email = email_to("tempfail@example.com")
    with SmtpSink(redis=redis, keys=keys) as sink, pytest.raises(MailTransient):
        mailer_for(sink).send(email)
    with SmtpSink(redis=redis, keys=keys) as restarted:
        mailer_for(restarted).send(email)
    assert [m["message_id"] for m in read_messages(redis, keys)] == [email.message_id]


def test_unwritable_redis_defers_the_message() -> None:
    unreachable = Redis(port=free_port(), socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))
    with SmtpSink(redis=unreachable, keys=OrderKeys("chumon")) as sink:
        with pytest.raises(MailTransient, match=re.escape(STORAGE_REPLY)):
            mailer_for(sink).send(email_to("ada@example.com"))
        assert sink.count() == 0
    unreachable.close()


def test_sink_process_records_to_redis_and_stops_on_sigterm(redis: Redis, redis_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chumon.smtpsink", "--port", "0"],
        env=env_for(redis_url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in ready, ready
        port = int(ready.split("127.0.0.1:")[1].split(",")[0])

        SmtpMailer(SmtpConfig(port=port, timeout=5.0)).send(email_to("ada@example.com"))
        wait_until(lambda: read_messages(redis, OrderKeys()), message="the message in Redis")

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, ready + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made for this test run."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    if _make_certificate_with_cryptography(cert, key) or _make_certificate_with_openssl(cert, key):
        return cert, key
    pytest.skip("no way to make a test certificate: neither `cryptography` nor an `openssl` binary")


def _make_certificate_with_cryptography(cert: Path, key: Path) -> bool:
    try:
        import datetime
        import ipaddress

        from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives import hashes, serialization  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found, unused-ignore]
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return True


def _make_certificate_with_openssl(cert: Path, key: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return True


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """Trusts the test certificate only, with host name checking as in production."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_starttls_with_login(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    with SmtpSink(tls_context=server_tls, credentials=("shop", PASSWORD)) as sink:
        mailer = mailer_for(
            sink, tls="starttls", username="shop", password=SecretStr(PASSWORD), ssl_context=client_tls
        )
        mailer.send(email_to("ada@example.com"))
    assert sink.unique_message_ids() == {"<confirmation.ord-1@shop.example>"}


def test_implicit_tls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    with SmtpSink(tls_context=server_tls, implicit_tls=True) as sink:
        mailer_for(sink, tls="ssl", ssl_context=client_tls).send(email_to("ada@example.com"))
    assert sink.count() == 1


def test_wrong_password_is_rejected_without_naming_it(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    wrong = "not-the-password-123"
    with SmtpSink(tls_context=server_tls, credentials=("shop", PASSWORD)) as sink:
        mailer = mailer_for(
            sink, tls="starttls", username="shop", password=SecretStr(wrong), ssl_context=client_tls
        )
        with pytest.raises(MailRejected, match="535") as caught:
            mailer.send(email_to("ada@example.com"))
    assert wrong not in str(caught.value)
    assert sink.count() == 0


def test_sink_with_credentials_refuses_mail_without_login() -> None:
    with SmtpSink(credentials=("shop", PASSWORD)) as guarded, pytest.raises(MailRejected, match="530"):
        mailer_for(guarded).send(email_to("ada@example.com"))


def test_an_untrusted_certificate_is_not_accepted(server_tls: ssl.SSLContext) -> None:
    with SmtpSink(tls_context=server_tls) as sink:
        mailer = mailer_for(sink, tls="starttls")  # the system's CAs: the test certificate is unknown
        with pytest.raises(MailTransient, match="SSLCertVerificationError"):
            mailer.send(email_to("ada@example.com"))
    assert sink.count() == 0


def test_plain_smtp_client_sees_the_starttls_offer(server_tls: ssl.SSLContext) -> None:
    with SmtpSink(tls_context=server_tls) as sink, smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
