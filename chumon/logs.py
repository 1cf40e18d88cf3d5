"""Logging for the command line: readable text by default, JSON lines when configured.

Whatever the format, every line is masked before it is written: email addresses keep their
first character and domain (``a***@example.com``) and payment tokens their prefix
(``tok_***``), so neither reaches a log file, a traceback included.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

EMAIL = re.compile(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
TOKEN = re.compile(r"\btok_[A-Za-z0-9_]+")


def mask(text: str) -> str:
    return TOKEN.sub("tok_***", EMAIL.sub(r"\1***@\2", text))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


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


def configure(level: str = "INFO", *, fmt: str = "text", jobs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET if jobs else logging.WARNING)
