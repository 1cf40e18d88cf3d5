"""Personal data in text the order flow stores: what reaches an order's reasons is masked.

A mail server's refusal quotes the recipient ("550 5.1.1 <grace@example.com>: mailbox
unavailable"); a gateway may quote what it was sent. Such text becomes an order's reason or
attention flag, kept with the order and shown to operators, so it is masked before it is stored:
an email keeps its first character and its domain (``g***@example.com``), a payment token its
prefix (``tok_***``). The command line and the dashboard mask their output the same way
(chumon/logs.py uses these patterns).
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
TOKEN = re.compile(r"\btok_[A-Za-z0-9_]+")


def mask_personal(text: str) -> str:
    """``text`` with email addresses and payment tokens masked (cheap when there are none)."""
    if "@" in text:
        text = EMAIL.sub(r"\1***@\2", text)
    if "tok_" in text:
        text = TOKEN.sub("tok_***", text)
    return text
