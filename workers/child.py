"""The child process of an isolated job type: ``python -m workers.child`` (workers/isolation.py).

It reads JSON lines on stdin: first ``{"settings": ...}``, then one ``{"job": ...}`` per
attempt, and answers each job with one JSON line on the pipe that was its stdout (its own
stdout is pointed at stderr, so a handler's prints cannot break the protocol). Replies:

- ``{"kind": "done", "result": <base64 JSON>, "effects": [...]}``
- ``{"kind": "failed", "exc_type", "message", "traceback", "retryable", "delay", "recycle"}``
- ``{"kind": "rate_limited", "message", "delay"}`` and ``{"kind": "cancelled", "message"}``

It exits at the end of its input, when its parent is gone, or after a ``MemoryError``
(``recycle``: its heap may be in no state for another job). It ignores SIGINT and SIGTERM:
the worker decides when it stops, and kills it if it must.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from types import ModuleType
from typing import IO, Any

from workers.codec import encode_result
from workers.connection import connect
from workers.effects import Effects
from workers.enqueue import Enqueuer
from workers.errors import Cancelled, Permanent, RateLimited, Retryable
from workers.jobtypes import JobContext, JobType
from workers.layout import Layout
from workers.reporting import JobLogger, Reporter
from workers.settings import RuntimeSettings

SCRIPT = "__chumon_main__"


class Runtime:
    """What every job of this child shares: settings, one Redis client, the enqueuer."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.redis = connect(settings.redis_url, settings.redis)  # lazy: connects on first use
        self.layout = Layout(self.redis, settings)
        self.enqueuer = Enqueuer(self.redis, settings, layout=self.layout)
        self.log = logging.getLogger("chumon.worker")

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        job_type: JobType[Any] | None = None
        try:
            job_type = _find(job["module"], job["name"], job.get("path"))
            model = job_type.payload.model_validate(job["payload"])
            ctx = self.context(job["ctx"])
            value = job_type.handler(model, ctx)
        except RateLimited as exc:
            return {"kind": "rate_limited", "message": str(exc), "delay": exc.delay}
        except Cancelled as exc:
            return {"kind": "cancelled", "message": str(exc)}
        except BaseException as exc:  # every failure goes back to the worker, which applies the policy
            return _failure(exc, job_type)
        try:
            result = encode_result(value)
        except TypeError as exc:
            return {"kind": "failed", "exc_type": "UnserializableResult", "message": str(exc),
                    "retryable": False}  # fmt: skip
        return {"kind": "done", "result": result, "effects": ctx.effects.commands}

    def context(self, fields: dict[str, Any]) -> JobContext:
        return JobContext(
            job_id=str(fields["job_id"]),
            job_type=str(fields["job_type"]),
            queue=str(fields["queue"]),
            attempt=int(fields["attempt"]),
            max_attempts=int(fields["max_attempts"]),
            execution_id=str(fields["execution_id"]),
            idempotency_key=fields.get("idempotency_key"),
            redis=self.redis,
            enqueuer=self.enqueuer,
            log=JobLogger(self.log, self._reporter(fields)),
            effects=Effects(self.layout.keys(str(fields["queue"])).effect_refusal),
        )

    def _reporter(self, fields: dict[str, Any]) -> Reporter:
        """``ctx.progress`` and ``ctx.log("line")`` write to the job from the child, as in a slot."""
        job_id, execution, queue = str(fields["job_id"]), str(fields["execution_id"]), str(fields["queue"])
        return Reporter(
            self.layout.family(queue).scripts, self.redis, self.settings, job_id, execution, queue
        )


def _find(module: str, name: str, path: str | None) -> JobType[Any]:
    found: Any = _script(path) if module == "__main__" and path else importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    if not isinstance(found, JobType):
        raise TypeError(f"{module}.{name} is not a job type (registry.job(...) returns one)")
    return found


def _script(path: str) -> ModuleType:
    """The worker's main script, run once in this child under the name ``__chumon_main__``."""
    loaded = sys.modules.get(SCRIPT)
    if loaded is None:
        spec = importlib.util.spec_from_file_location(SCRIPT, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the worker's script {path}")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[SCRIPT] = loaded
        spec.loader.exec_module(loaded)
    return loaded


def _failure(exc: BaseException, job_type: JobType[Any] | None) -> dict[str, Any]:
    permanent = isinstance(exc, Permanent) or (job_type is not None and isinstance(exc, job_type.permanent))
    return {
        "kind": "failed",
        "exc_type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "retryable": isinstance(exc, Retryable) or not permanent,
        "delay": exc.delay if isinstance(exc, Retryable) else None,
        "recycle": isinstance(exc, MemoryError),
    }


def _exit_with_parent(parent: int) -> None:
    """A child outlives no worker: it exits within a second of its parent's death."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies: IO[str] = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    hello = json.loads(sys.stdin.readline() or "{}")
    if "settings" not in hello:
        return
    runtime = Runtime(RuntimeSettings.model_validate(hello["settings"]))
    for line in sys.stdin:
        reply = runtime.run(json.loads(line)["job"])
        replies.write(json.dumps(reply, separators=(",", ":")) + "\n")
        replies.flush()
        if reply.get("recycle"):
            return


if __name__ == "__main__":
    main()
