"""A newer version of the order flow, as a rolling deploy meets it: one more event type.

``GiftWrapped`` is written by the "upgraded writer" (``wrap_gift``) while consumers of the
current version run: they cannot read it. ``install()`` is the upgrade of a consumer: the
type becomes known. ``python -m tests.apps.upgrade events`` is an upgraded ``chumon events``.
"""

from __future__ import annotations

import sys

from orders import events as e
from orders.saga import Messages, Transition
from orders.service import OrderService


class GiftWrapped(e.Event):
    paper: str


def wrap_gift(orders: OrderService, order_id: str, paper: str = "gold") -> Transition | None:
    """What a newer writer does: record a GiftWrapped event on the order."""
    return orders.apply(
        order_id,
        lambda order, saga, now: Transition(
            order, saga, events=[Messages(order, None, now).make(GiftWrapped, paper=paper)]
        ),
    )


def install() -> None:
    e.EVENT_TYPES[GiftWrapped.type_name()] = GiftWrapped


def uninstall() -> None:
    e.EVENT_TYPES.pop(GiftWrapped.type_name(), None)


if __name__ == "__main__":
    from chumon.cli import main

    install()
    sys.exit(main(sys.argv[1:]))
