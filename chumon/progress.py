"""A one-line progress display for long work (the demos, the benchmarks).

On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints a line when the
count changes, at most once a second, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, *, stream: TextIO = sys.stderr, width: int = 24) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last_print = 0.0
        self._last_done = -1

    def update(self, done: int, detail: str = "") -> None:
        now = time.monotonic()
        if not self.tty and (done == self._last_done or now - self._last_print < 1.0) and done < self.total:
            return
        filled = int(self.width * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {done}/{self.total} {self.label} {now - self.started:5.1f}s  {detail}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_print, self._last_done = now, done

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
