"""The SMTP sink's record of a message: read straight from a plain header block, or parsed by the
stdlib when it needs decoding; both must record the same thing."""

from __future__ import annotations

import pytest

from chumon.smtpsink import RECORDED, _plain_headers, describe
from orders.config import SmtpConfig
from orders.notifications import Email, SmtpMailer, parse_message


def parsed(content: bytes) -> dict[str, str | None]:
    message = parse_message(content, headers_only=True)
    return {name: str(v).strip() if (v := message.get(name)) is not None else None for name in RECORDED}


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("Your order o-1 is confirmed", "Customer 5"),
        ("Your order o-1 is cancelled: " + "out of stock, " * 12, "A " + "b" * 90),
        ("Zoë's order", "Zoë"),
        ('a "quoted" (comment) \\ subject', "O'Brien, Pat"),
        ("=?utf-8?q?looks_encoded?=", "Customer 5"),
    ],
)
def test_the_same_record_as_the_parser(subject: str, name: str) -> None:
    email = Email(
        kind="confirmation",
        order_id="o-1",
        to="c5@example.com",
        to_name=name,
        subject=subject,
        body="Hello",
        message_id="<confirmation.o-1@shop.example>",
    )
    content = crlf(SmtpMailer(SmtpConfig()).build_message(email).as_bytes())
    record = describe("shop@example.com", ["c5@example.com"], content)
    assert {
        name: record[key]
        for name, key in zip(RECORDED, ("message_id", "subject", "order_id", "kind"), strict=True)
    } == (parsed(content))


@pytest.mark.parametrize(
    "content",
    [
        b"Subject: a\r\n  b\r\nMessage-ID: <x@y>\r\nX-Chumon-Kind: k\r\nX-Chumon-Kind: j\r\n\r\nbody",
        b"subject:   spaced   out  \r\nx-chumon-order:o1\r\n\r\n",
        b"Subject:\r\n folded only\r\n\r\n",
        b"Subject: tab\r\n\tcont\r\n\r\n",
        b"Subject: no body",
    ],
)
def test_plain_blocks_are_read_straight(content: bytes) -> None:
    assert _plain_headers(content) == parsed(content)


@pytest.mark.parametrize(
    "content",
    [
        b"Message-ID: <a b@c>\r\n\r\n",  # the parser reads only '<a'
        b"X Y: 1\r\nSubject: s\r\n\r\n",  # not a header line: the parser starts the body there
        b"Subject: s\nX-Chumon-Kind: k\n\n",  # bare line feeds
        "Subject: Zoë\r\n\r\n".encode(),
        b"Subject: =?utf-8?q?Zo=C3=AB?=\r\n\r\n",
    ],
)
def test_other_blocks_go_to_the_parser(content: bytes) -> None:
    assert _plain_headers(content) is None
    record = describe("a@b.example", [], content)
    assert record["subject"] == parsed(content)["Subject"]
