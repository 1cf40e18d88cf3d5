"""Logging for the command line: readable text by default, JSON lines when configured.

Whatever the format, every line is masked before it is written: email addresses keep their
first character and domain (``a***@example.com``), payment tokens their prefix (``tok_***``)
and URLs their user name but not their password (``redis://u:***@host``), so none of them
reaches a log file, a traceback included. ``mask_url`` is the same rule for what a command
prints.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from orders.privacy import EMAIL, TOKEN
from workers.joblog import JobLine, set_sink

# scheme://userinfo@ (greedy up to the last '@' before the path: a password may hold a raw '@')
URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/\s]*)@")
URL_PASSWORD_PARAM = re.compile(r"([?&](?:[a-z_]*password)=)[^&#\s]*", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it masked: ``redis://u:***@host/0``.

    A URL whose user part has no ``:`` (``redis://secret@host``) may carry a password there
    (redis-py reads it as a user name), so it is masked whole; so is a ``password=`` (or
    ``sentinel_password=``) query parameter.
    """

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _password = match.group(2).partition(":")
        return f"{match.group(1)}{user}:***@" if colon else f"{match.group(1)}***@"

    text = URL_USERINFO.sub(userinfo, text)
    return URL_PASSWORD_PARAM.sub(r"\1***", text)


def mask(text: str) -> str:
    """The text with URL passwords, email addresses and payment tokens masked (cheap when
    there are none)."""
    if "://" in text:
        text = mask_url(text)
    if "@" in text:
        text = EMAIL.sub(r"\1***@\2", text)
    if "tok_" in text:
        text = TOKEN.sub("tok_***", text)
    return text


class TextFormatter(logging.Formatter):
    """``2026-11-26 10:00:00,123 INFO chumon.jobs: ...``, masked. Built by hand: the job lines
    are the busiest in the system, and logging's generic formatting costs several times this."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        head = f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}"
        line = f"{head}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job's fields, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "job", None)
        if isinstance(job, dict):
            line.update(job)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return mask(json.dumps(line, default=str))


class BatchedJobLines:
    """The job lines' sink: a whole batch formatted like every other line, masked, and written
    to the handler's stream in one call (workers/joblog.py explains why)."""

    def __init__(self, handler: logging.StreamHandler[Any], fmt: str) -> None:
        self.handler = handler
        self.json = fmt == "json"
        self._second = -1
        self._stamp = ""

    def __call__(self, lines: list[JobLine]) -> None:
        text = mask("".join(self._format(line) for line in lines))
        self.handler.acquire()
        try:
            self.handler.stream.write(text)
            self.handler.flush()
        except (OSError, ValueError):  # a log that cannot be written must not stop a worker
            pass
        finally:
            self.handler.release()

    def _format(self, line: JobLine) -> str:
        if self.json:
            at = datetime.fromtimestamp(line.at, UTC).isoformat(timespec="milliseconds")
            head = {
                "time": at,
                "level": line.level_name,
                "logger": "chumon.jobs",
                "message": line.text(),
            }
            return json.dumps({**head, **line.fields()}, default=str) + "\n"
        second = int(line.at)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        level = line.level_name
        return f"{self._stamp},{int(line.at % 1 * 1000):03d} {level} chumon.jobs: {line.text()}\n"


def configure(level: str = "INFO", *, fmt: str = "text", jobs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET if jobs else logging.WARNING)
    set_sink(BatchedJobLines(handler, fmt))
