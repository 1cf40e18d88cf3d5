"""The runners' buffer: every item reaches exactly one thread, and an item wakes at most one thread
(``queue.SimpleQueue`` woke a second one per put, which found nothing and slept again)."""

from __future__ import annotations

import threading
from typing import Any

from tests.support import wait_until
from workers.runner import Handoff


class CountedLock:
    """A thread's wake-up lock that counts how often the thread woke."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.woke = 0

    def acquire(self) -> bool:
        self.lock.acquire()
        self.woke += 1
        return True

    def release(self) -> None:
        self.lock.release()


def sleepers(buffer: Handoff, taken: list[Any]) -> tuple[list[CountedLock], list[threading.Thread]]:
    """Eight runner-like threads taking items into ``taken`` until a None, all waiting once this returns."""
    locks = [CountedLock() for _ in range(8)]

    def run(wakeup: Any) -> None:
        while (item := buffer.get(wakeup)) is not None:
            taken.append(item)

    threads = [threading.Thread(target=run, args=(lock,), daemon=True) for lock in locks]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(buffer._waiting) == 8, timeout=10, message="every thread waiting")
    return locks, threads


def stop(buffer: Handoff, threads: list[threading.Thread]) -> None:
    for _ in threads:
        buffer.put(None)
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)


def test_each_item_reaches_one_thread_and_each_put_wakes_one() -> None:
    buffer = Handoff()
    taken: list[Any] = []
    locks, threads = sleepers(buffer, taken)
    for n in range(100):  # one at a time, each taken before the next: every put finds 8 waiting
        buffer.put(n)  # type: ignore[arg-type]
        wait_until(lambda n=n: len(taken) == n + 1 and len(buffer._waiting) == 8, timeout=10, message="taken")
    assert sorted(taken) == list(range(100))
    assert sum(lock.woke for lock in locks) == 100  # one wake-up per put, none for nothing
    stop(buffer, threads)


def test_items_put_while_every_thread_is_busy_wait_for_the_next_get() -> None:
    buffer = Handoff()
    for n in range(3):
        buffer.put(n)  # type: ignore[arg-type]
    assert [buffer.get(threading.Lock()) for _ in range(2)] == [0, 1]  # first in, first out
    assert buffer.get_nowait() == 2


def test_a_burst_reaches_every_sleeping_thread_through_the_chain() -> None:
    """A burst wakes one thread, which wakes the next while items remain: every item is taken
    once, at most one wake-up per item, and none is left behind."""
    buffer = Handoff()
    taken: list[Any] = []
    locks, threads = sleepers(buffer, taken)
    for n in range(40):
        buffer.put(n)  # type: ignore[arg-type]
    wait_until(lambda: len(taken) == 40 and len(buffer._waiting) == 8, timeout=10, message="all taken")
    assert sorted(taken) == list(range(40)) and buffer._waking == 0
    assert 1 <= sum(lock.woke for lock in locks) <= 40
    stop(buffer, threads)
