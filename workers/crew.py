"""Several workers in one process: on Redis Cluster, a worker process serving several queues runs
one ``Worker`` per queue (each queue's keys live in a slot of their own, workers/keys.py), each
with its own threads, all stopped together by the process's SIGTERM or SIGINT (a second one:
stop without draining, as for one worker)."""

from __future__ import annotations

import gc
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType

from workers.keys import shard_tags, sharded_queue, sub_queues, tag_of
from workers.worker import Worker


def served_queues(
    queues: Sequence[str],
    split: Mapping[str, int],
    cluster: bool,
    *,
    sharded: Iterable[str] = (),
    shards: int = 1,
) -> list[list[str]]:
    """The queues of each of a worker process's workers: all in one on one Redis; on a cluster,
    one worker per slot: per queue, per sub-queue (``CHUMON_QUEUE_SPLIT``: every sub-queue of a
    split queue), per group (``reports@acme`` and ``exports@acme`` in one worker), and per shard
    for the registry's sharded queues (``orders@shard0`` and ``payments@shard0`` in one worker)."""
    unique = list(dict.fromkeys(queues))
    if not cluster:
        return [unique]
    groups: dict[str, list[str]] = {}  # by slot: the queues of one group share a worker
    copies = set(sharded)
    for queue in unique:
        if queue in copies:  # one copy per shard: the shard's queues share its worker; and the
            # queue itself, for a job enqueued without naming its shard (it would wait for ever)
            names = [sharded_queue(queue, tag) for tag in shard_tags(shards)] + [queue]
        else:
            names = list(sub_queues(queue, split.get(queue, 1)))
        for name in names:
            groups.setdefault(tag_of(name), []).append(name)
    return list(groups.values())


class Crew:
    def __init__(self, workers: Sequence[Worker]) -> None:
        if not workers:
            raise ValueError("a crew needs at least one worker")
        self.workers = list(workers)
        self._signalled = 0

    def stop(self, *, hard: bool = False) -> None:
        for worker in self.workers:
            worker.stop(hard=hard)

    def run(self, *, burst: bool = False) -> Counter[str]:
        """Run every worker until stopped (or, with ``burst``, until each found its queue empty)."""
        stats: Counter[str] = Counter()
        errors: list[BaseException] = []

        def serve(worker: Worker) -> None:
            try:
                stats.update(worker.run(burst=burst))
            except BaseException as exc:  # reported by run() below, after the others stopped
                errors.append(exc)
                self.stop()

        restore = self._install_signals()
        if threading.current_thread() is threading.main_thread():
            gc.freeze()  # as one worker process does (workers/worker.py): its allocations live as long
        threads = [
            threading.Thread(target=serve, args=(w,), name=f"chumon-worker-{w.queues[0]}")
            for w in self.workers
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # wakes for signals
        finally:
            restore()
        if errors:
            raise errors[0]
        return stats

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signalled += 1
            self.stop(hard=self._signalled > 1)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
