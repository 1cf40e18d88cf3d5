"""A small in-process event bus: typed subscribe and publish.

Handlers subscribe to an event class; publishing an event calls the handlers of its class
and of its base classes (subscribe to ``StepFailed`` to hear every step's failure), in the
order they subscribed. The bus does not catch: a handler's error reaches the publisher,
who knows whether to retry (a reactor does not acknowledge the entry) or to log.

Used after a commit to tell the process's own listeners what happened (metrics, logs), and
by the reactors to route events read from the stream to the services' reactions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from orders.events import Event

E = TypeVar("E", bound=Event)


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        if handler in self._handlers[event_type]:
            raise ValueError(f"{handler!r} already handles {event_type.__name__}")
        self._handlers[event_type].append(handler)

    def handles(self, event_type: type[Event]) -> bool:
        """Whether publishing an event of this class would call any handler."""
        return any(self._handlers.get(cls) for cls in event_type.__mro__)

    def publish(self, event: Event) -> int:
        """Call every handler of the event's class and bases; return how many ran."""
        called = 0
        for cls in type(event).__mro__:
            for handler in self._handlers.get(cls, ()):
                handler(event)
                called += 1
        return called
