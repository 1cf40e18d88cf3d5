"""Runner threads: where handlers run, N at a time, with time limits enforced.

Each slot is a thread that takes claimed jobs from one shared buffer. A job past its time
limit gets ``JobTimeout`` raised inside its thread (CPython's ``PyThreadState_SetAsyncExc``,
the mechanism of rq's own ``TimerDeathPenalty``); shutdown raises ``Interrupted`` the same
way. The exception lands at the thread's next Python instruction, so a job blocked inside C
code (a socket read without timeout) only sees it when that call returns. A slot whose job
has not come back ``grace`` seconds after the exception is *abandoned*: its attempt is
settled as timed out (or released, on shutdown), a fresh thread takes its place, and the
stuck thread's eventual result is discarded.

The slot's lock makes "the job finished" and "the job was interrupted" mutually exclusive:
the conductor only raises into a slot that is running a job, and a runner that finds its
slot flagged clears any exception still pending before it reports.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue

from workers.errors import Interrupted, JobTimeout
from workers.execution import Claimed, Outcome


class Handoff:
    """The buffer between the conductor and the runner threads: each item wakes at most one thread.

    ``queue.SimpleQueue`` with several threads waiting in ``get`` wakes them in a chain, each
    taker passing its lock to the next: good for a burst, but the chain's last link is a thread
    woken for nothing, that finds the queue empty and sleeps again (taking the GIL): one per
    job, for a worker fed one job at a time. Here the items still go through a ``SimpleQueue``
    (its C ``put`` and ``get_nowait``, all a busy worker's runners use); a thread that finds it
    empty sleeps on a lock of its own. A put wakes one sleeper unless one is already on its way
    (``_waking``), and a woken thread that takes an item wakes the next only while items remain:
    the chain, without its last link. An item is never left behind: after every put either a
    thread is on its way to look, or one is woken to."""

    def __init__(self) -> None:
        self._items: SimpleQueue[Claimed | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._waiting: list[threading.Lock] = []  # the sleepers' locks, the last to sleep last
        self._waking = 0  # sleepers released that have not looked at the queue yet

    def put(self, item: Claimed | None) -> None:
        self._items.put(item)
        if self._waiting and not self._waking:  # read without the lock; _wake_one decides
            self._wake_one()

    def get(self, wakeup: threading.Lock) -> Claimed | None:
        """The next item, waiting for one. ``wakeup``: the calling thread's own lock, held by it
        (acquired once when the thread starts); a put releases it to wake the thread."""
        items = self._items
        while True:
            try:
                item = items.get_nowait()
            except Empty:
                pass
            else:
                self._pass_on()
                return item
            with self._lock:
                self._waiting.append(wakeup)
            try:  # an item put before this thread was listed may have woken nobody: look again
                item = items.get_nowait()
            except Empty:
                wakeup.acquire()  # until a put (or a woken thread) releases it
                with self._lock:
                    self._waking -= 1
                continue
            with self._lock:
                listed = wakeup in self._waiting
                if listed:
                    self._waiting.remove(wakeup)
            if not listed:  # released meanwhile: take that release, and count it done
                wakeup.acquire()
                with self._lock:
                    self._waking -= 1
            self._pass_on()
            return item

    def get_nowait(self) -> Claimed | None:
        return self._items.get_nowait()

    def _pass_on(self) -> None:
        """Wake the next sleeper while items remain (a burst's chain)."""
        if self._waiting and not self._waking and self._items.qsize():
            self._wake_one()

    def _wake_one(self) -> None:
        with self._lock:
            if not self._waiting or self._waking:
                return
            waiter = self._waiting.pop()
            self._waking += 1
        waiter.release()


TIMEOUT = "timeout"
INTERRUPT = "interrupt"


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` asynchronously in a thread; None clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class Slot:
    __slots__ = ("abandon_at", "abandoned", "claimed", "deadline", "flag", "lock", "thread")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claimed: Claimed | None = None
        self.deadline = 0.0
        self.flag: str | None = None
        self.abandon_at = 0.0
        self.abandoned = False
        self.thread: threading.Thread | None = None


class Runners:
    def __init__(
        self,
        size: int,
        execute: Callable[[Claimed], Outcome],
        post: Callable[[Outcome], None],
        *,
        grace: float,
        began: Callable[[Claimed], None] = lambda claimed: None,
        clock: Callable[[], float] = time.time,
        name: str = "chumon-runner",
    ) -> None:
        self.size = size
        self.execute = execute
        self.post = post
        self.began = began
        self.clock = clock
        self.grace = grace
        self.name = name
        self.buffer = Handoff()
        self.slots: list[Slot] = []
        self.abandoned = 0

    def start(self) -> None:
        for _ in range(self.size):
            self.slots.append(self._spawn())

    def submit(self, claimed: Claimed) -> None:
        self.buffer.put(claimed)

    def take_buffered(self) -> list[Claimed]:
        """Remove and return the jobs no runner has started yet."""
        taken: list[Claimed] = []
        while True:
            try:
                item = self.buffer.get_nowait()
            except Empty:
                return taken
            if item is not None:
                taken.append(item)

    def running(self) -> list[Claimed]:
        return [c for slot in self.slots if (c := slot.claimed) is not None]

    def next_deadline(self) -> float | None:
        deadlines = [s.abandon_at if s.flag else s.deadline for s in self.slots if s.claimed is not None]
        return min(deadlines) if deadlines else None

    def enforce(self, now: float) -> list[Outcome]:
        """Raise JobTimeout in jobs past their limit; abandon slots stuck past the grace period.

        ``now`` is a monotonic time. Returns the outcomes settled on behalf of abandoned slots.
        """
        settled: list[Outcome] = []
        for index, slot in enumerate(self.slots):
            with slot.lock:
                claimed = slot.claimed
                if claimed is None or slot.thread is None:
                    continue
                if slot.flag is None and now >= slot.deadline:
                    slot.flag, slot.abandon_at = TIMEOUT, now + self.grace
                    _raise_in(slot.thread.ident or 0, JobTimeout)
                elif slot.flag is not None and now >= slot.abandon_at:
                    slot.abandoned = True
                    outcome = Outcome(claimed, "released") if slot.flag == INTERRUPT else None
                    settled.append(outcome or Outcome.failure(claimed, "JobTimeout", "job thread abandoned"))
            if slot.abandoned:
                self.abandoned += 1
                self.slots[index] = self._spawn()
        return settled

    def interrupt(self, now: float, grace: float) -> None:
        """Raise Interrupted in every running job (shutdown); they get ``grace`` to unwind."""
        for slot in self.slots:
            with slot.lock:
                if slot.claimed is not None and slot.flag is None and slot.thread is not None:
                    slot.flag, slot.abandon_at = INTERRUPT, now + grace
                    _raise_in(slot.thread.ident or 0, Interrupted)

    def stop(self) -> None:
        for _ in self.slots:
            self.buffer.put(None)

    def _spawn(self) -> Slot:
        slot = Slot()
        slot.thread = threading.Thread(target=self._loop, args=(slot,), name=self.name, daemon=True)
        slot.thread.start()
        return slot

    def _loop(self, slot: Slot) -> None:
        wakeup = threading.Lock()
        wakeup.acquire()
        while not slot.abandoned:
            claimed = self.buffer.get(wakeup)
            if claimed is None:
                return
            self._run_one(slot, claimed)

    def _run_one(self, slot: Slot, claimed: Claimed) -> None:
        claimed.started_at = self.clock()
        with slot.lock:
            slot.claimed, slot.flag = claimed, None
            slot.deadline = time.monotonic() + claimed.timeout
        outcome: Outcome | None
        try:
            self.began(claimed)
            outcome = self.execute(claimed)
        except (JobTimeout, Interrupted):  # landed outside the handler's own try
            outcome = None
        except BaseException as exc:  # nothing may end a runner thread but the runtime itself
            outcome = Outcome.failure(claimed, "RuntimeFault", f"{type(exc).__name__}: {exc}")
        flag, abandoned = self._settle_slot(slot)
        if abandoned:
            return
        if flag == INTERRUPT:
            outcome = Outcome(claimed, "released")
        elif flag == TIMEOUT:
            outcome = (outcome or Outcome(claimed, "failed")).timed_out()
        if outcome is not None:
            outcome.ended_at = self.clock()
            self.post(outcome)

    @staticmethod
    def _settle_slot(slot: Slot) -> tuple[str | None, bool]:
        """Mark the slot idle; clear an async exception still pending. Safe against one landing here."""
        while True:
            try:
                with slot.lock:
                    slot.claimed = None
                    flag, abandoned = slot.flag, slot.abandoned
                    if flag is not None:
                        _raise_in(threading.get_ident(), None)
                return flag, abandoned
            except (JobTimeout, Interrupted):
                continue
