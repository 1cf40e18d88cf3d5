"""chumon's job runtime: BullMQ-style workers on rq's data model.

Generic: it knows nothing of orders. Its public surface is re-exported here.
"""

from workers.control import CancelResult, Control
from workers.effects import EffectError, Effects
from workers.enqueue import Enqueuer
from workers.errors import (
    Cancelled,
    Interrupted,
    JobTimeout,
    NoSuchJob,
    PayloadTooLarge,
    Permanent,
    RateLimited,
    Retryable,
    UnknownJobType,
)
from workers.events import JobEvent, JobEvents
from workers.flows import ChildResult, Flow, FlowJob, FlowProducer
from workers.jobtypes import DeadLetterNotice, JobContext, JobRegistry, JobType
from workers.jobview import JobInfo, load_job
from workers.limits import RateLimit
from workers.options import EnqueueOptions
from workers.policy import RetryPolicy, backoff_delay
from workers.retention import Keep
from workers.schedules import Schedule
from workers.settings import RuntimeSettings
from workers.worker import Worker

__all__ = [
    "CancelResult",
    "Cancelled",
    "ChildResult",
    "Control",
    "DeadLetterNotice",
    "EffectError",
    "Effects",
    "EnqueueOptions",
    "Enqueuer",
    "Flow",
    "FlowJob",
    "FlowProducer",
    "Interrupted",
    "JobContext",
    "JobEvent",
    "JobEvents",
    "JobInfo",
    "JobRegistry",
    "JobTimeout",
    "JobType",
    "Keep",
    "NoSuchJob",
    "PayloadTooLarge",
    "Permanent",
    "RateLimit",
    "RateLimited",
    "RetryPolicy",
    "Retryable",
    "RuntimeSettings",
    "Schedule",
    "UnknownJobType",
    "Worker",
    "backoff_delay",
    "load_job",
]
