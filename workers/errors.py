"""The errors a job raises to say what should happen next.

- ``Retryable``: try again, after the policy's backoff or after the delay it carries.
- ``Permanent``: never try again; the job goes to its dead-letter queue at once.
- Any other exception is **retryable**. A job that fails for a reason nobody foresaw is far
  more often hit by something transient (a network blip, a timeout, a restarting peer) than
  by a bug that will fail forever; retrying costs a bounded number of attempts and ends in
  the dead-letter queue with every attempt's traceback, while the opposite default would
  dead-letter work on every passing fault. A job type that knows better lists exception
  classes as permanent (``JobRegistry.job(permanent=(ValueError,))``), the way dramatiq's
  ``throws`` does.
- A time-out (``JobTimeout``) is a failed attempt like any other and follows the policy.

Errors of the runtime itself (not raised by jobs) derive from ``RuntimeFault``.
"""

from __future__ import annotations


class JobError(Exception):
    """Base class of the errors a job raises on purpose."""


class Retryable(JobError):
    """A failure worth another attempt; ``delay`` (seconds) overrides the computed backoff."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and not (0 <= delay <= 365 * 24 * 3600):
            raise ValueError(f"Retryable delay must be from 0 to a year in seconds, not {delay!r}")
        self.delay = delay


class RateLimited(JobError):
    """The other side asked to slow down (an HTTP 429, an SMTP 421): wait ``delay`` seconds.

    Uses no attempt. The job's type, if it has a rate limit, else its queue, is paused for
    ``delay`` seconds for every worker (workers/limits.py).
    """

    def __init__(self, message: str = "", *, delay: float) -> None:
        super().__init__(message)
        if not 0 < delay <= 24 * 3600:
            raise ValueError(f"RateLimited delay must be above 0 and at most a day in seconds, not {delay!r}")
        self.delay = delay


class Cancelled(JobError):
    """Raised by a job that saw ``ctx.cancelled`` (someone asked it to stop): it ends cancelled,
    not failed; it is neither retried nor dead-lettered."""


class Permanent(JobError):
    """A failure no retry can fix (a declined card, a rejected address, a 5xx from SMTP)."""


class JobTimeout(BaseException):
    """Raised inside a job's thread when the job runs past its time limit.

    A BaseException so that a job's own ``except Exception`` does not swallow it.
    """


class Interrupted(BaseException):
    """Raised inside a job's thread when the worker shuts down before the job finished."""


class RuntimeFault(Exception):
    """Base class of errors the runtime raises to its callers."""


class UnknownJobType(RuntimeFault):
    """A job type name that no registry knows."""


class NoSuchJob(RuntimeFault):
    """A job id with no job behind it."""


class PayloadTooLarge(ValueError):
    """A payload larger than ``CHUMON_MAX_PAYLOAD_BYTES``: refused before anything is written."""


class ServerUnsupported(RuntimeFault):
    """The Redis server cannot serve chumon (too old, or missing a feature chumon needs)."""
