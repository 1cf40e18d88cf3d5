"""Wakes an idle worker the moment one of its queues gets work.

Every enqueue, retry and requeue appends an entry to its queue's signal stream (see
``includes/common.lua``). This thread blocks on those streams with XREAD from the last entry
it saw, so no signal falls between "the queues were empty" and "start waiting". It also
wakes the worker when a read times out, a safety poll that catches jobs pushed by tools that
do not signal (rq's own ``enqueue``, rq-dashboard's requeue).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from workers.codec import text
from workers.keys import Keys


class Listener(threading.Thread):
    def __init__(
        self,
        connect: Callable[[], Redis],
        keys: Keys,
        queues: list[str],
        wake: Callable[[], None],
        log: logging.Logger,
        *,
        block_ms: int = 1000,
    ) -> None:
        super().__init__(name="chumon-listener", daemon=True)
        self.connect = connect
        self.streams: dict[str, str] = {keys.signal(queue): "0-0" for queue in queues}
        self.wake = wake
        self.log = log
        self.block_ms = block_ms
        self.stopped = threading.Event()

    def run(self) -> None:
        redis: Redis | None = None
        while not self.stopped.is_set():
            try:
                redis = redis or self.connect()
                reply: Any = redis.xread(self.streams, count=1, block=self.block_ms)  # type: ignore[arg-type]
            except (RedisError, OSError, ValueError) as exc:  # ValueError: socket closed under us
                if self.stopped.is_set():
                    return
                self.log.warning("listener: %s; retrying", exc)
                redis = None
                self.stopped.wait(0.5)
                continue
            for stream, entries in reply or []:
                self.streams[text(stream)] = text(entries[-1][0])
            self.wake()

    def stop(self) -> None:
        self.stopped.set()
