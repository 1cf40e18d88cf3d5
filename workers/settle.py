"""Turning outcomes into the items the step and recover scripts apply.

This is where the retry policy is applied: a failed attempt becomes a retry at a time the
backoff decides, or a dead letter with its whole failure history, plus the dead-letter hook
job to enqueue in the same script call.
"""

from __future__ import annotations

import json
import logging
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from workers.codec import (
    Failure,
    append_failure,
    decode_meta,
    encode_exc_string,
    history_text,
    iso,
    size_over,
)
from workers.enqueue import NO_OPTIONS, Enqueuer
from workers.execution import UNREADABLE, Claimed, Outcome
from workers.jobtypes import DeadLetterNotice, JobRegistry, JobType
from workers.keys import GROUP, relay_queue, shard_tags, sharded_queue, tag_of
from workers.options import EnqueueOptions
from workers.policy import DeadLetter, RandomSource, RetryAt, RetryPolicy, clamp_delay, decide
from workers.scripts import dumps
from workers.settings import RuntimeSettings

LOG = logging.getLogger("chumon.worker")


def settle_ctx(settings: RuntimeSettings, worker: str) -> dict[str, Any]:
    """The ``ctx`` every settling script takes; ``worker`` is whose in-flight set holds the runs."""
    return {
        "worker": worker,
        "dlq_retention": settings.dlq_retention,
        "dlq_max_length": settings.dlq_max_length,
        "events": settings.events_cap,  # job lifecycle events: the stream's cap, or False (off)
        "results_in_hash": settings.result_store == "hash",
    }


@dataclass(slots=True)
class Plan:
    """The settle part of a step: one list per script section (formats: workers/lua/step.lua)."""

    done: list[list[Any]]
    failed: list[list[Any]]
    released: list[list[Any]]
    throttled: list[list[Any]] = field(default_factory=list)
    cancelled: list[list[Any]] = field(default_factory=list)
    kept: list[list[Any]] = field(default_factory=list)  # retention per job type (retention.py)
    retried: int = 0
    dead: int = 0
    actions: list[str] = field(
        default_factory=list
    )  # per outcome: succeeded, retried, dead_lettered, released, throttled, cancelled


class Settler:
    def __init__(
        self,
        registry: JobRegistry,
        settings: RuntimeSettings,
        enqueuer: Enqueuer,
        worker_name: str,
        rand: RandomSource = random.random,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.enqueuer = enqueuer
        self.worker_name = worker_name
        self.rand = rand
        self.relay = True if enqueuer.layout.cluster else None  # hooks across slots go by relay

    def policy_of(self, claimed: Claimed, job_type: JobType[Any] | None) -> RetryPolicy:
        """The job's own override, else its type's policy, else the default."""
        if claimed.retry:
            try:
                return RetryPolicy.model_validate_json(claimed.retry)
            except ValueError:
                pass
        if job_type is not None and job_type.retry is not None:
            return job_type.retry
        return self.settings.retry

    def plan(self, outcomes: list[Outcome], *, worker: str | None = None) -> Plan:
        """Items for the scripts; ``worker`` names the (dead) worker the runs belong to, if not us."""
        plan = Plan([], [], [])
        sections: tuple[list[Any], ...] = (
            plan.done, plan.failed, plan.released, plan.throttled, plan.cancelled, plan.kept, plan.actions
        )  # fmt: skip
        for outcome in outcomes:
            marks = [len(section) for section in sections]
            counts = plan.retried, plan.dead
            try:
                self._plan_one(plan, outcome, worker)
            except Exception as exc:  # a bug of ours: this run ends as a dead letter, not a stuck worker
                LOG.exception(
                    "job %s: its outcome could not be settled; dead-lettering it", outcome.claimed.job_id
                )
                for section, mark in zip(sections, marks, strict=True):
                    del section[mark:]  # nothing half-planned for it
                plan.retried, plan.dead = counts
                plan.failed.append(self._unplannable(outcome, exc, worker))
                plan.dead += 1
                plan.actions.append("dead_lettered")
        return plan

    def _plan_one(self, plan: Plan, outcome: Outcome, worker: str | None) -> None:
        """Append the outcome's item to the plan's section, and its action (keep() too)."""
        claimed = outcome.claimed
        if outcome.kind == "done":
            plan.done.append(self.done_item(outcome))
            plan.actions.append("succeeded")
        elif outcome.kind == "released":
            plan.released.append([claimed.job_id, claimed.execution, claimed.queue, worker or False, False])
            plan.actions.append("released")
        elif outcome.kind == "throttled":
            plan.throttled.append(self.throttled_item(outcome, worker))
            plan.actions.append("throttled")
        elif outcome.kind == "cancelled":
            plan.cancelled.append([claimed.job_id, claimed.execution, claimed.queue, worker or False])
            plan.actions.append("cancelled")
        else:
            item = self.failed_item(outcome, worker=worker)
            plan.failed.append(item)
            if item[3] == "retry":
                plan.retried += 1
                plan.actions.append("retried")
            else:
                plan.dead += 1
                plan.actions.append("dead_lettered")
        self.keep(plan, outcome)

    def _unplannable(self, outcome: Outcome, exc: Exception, worker: str | None) -> list[Any]:
        """A dead letter without a hook for a run whose item could not be built: the least that can
        be written, from values already checked (the claim's id, execution and queue)."""
        claimed = outcome.claimed
        reason = f"the runtime could not settle this run: {type(exc).__name__}: {exc}"[:500]
        meta = {"state": "dead-lettered", "dead_letter_reason": reason, "last_error": reason,
                "attempt": claimed.attempt}  # fmt: skip
        return [claimed.job_id, claimed.execution, claimed.queue, "dead", 0, json.dumps(meta),
                encode_exc_string(reason), False, claimed.attempt, claimed.started_at, outcome.ended_at,
                worker or False]  # fmt: skip

    def keep(self, plan: Plan, outcome: Outcome) -> None:
        """A kept item for a job whose type keeps only its last N finished or dead-lettered jobs,
        or dead letters for a limited age."""
        job_type = outcome.job_type
        if job_type is None or (job_type.keep_completed is None and job_type.keep_failed is None):
            return  # the common case: the type keeps what result_ttl and the dlq settings say
        action = plan.actions[-1]
        keep = {"succeeded": job_type.keep_completed, "dead_lettered": job_type.keep_failed}.get(action)
        if keep is not None and (keep.count or action == "dead_lettered"):
            kind = "completed" if action == "succeeded" else "failed"
            plan.kept.append(keep.item(outcome.claimed.job_id, job_type.name, kind))

    def throttled_item(self, outcome: Outcome, worker: str | None) -> list[Any]:
        """A job told to slow down: it waits, and its type (if rate-limited) or else its queue pauses."""
        claimed, job_type = outcome.claimed, outcome.job_type
        name = job_type.name if job_type else claimed.job_type
        limited = name in self.settings.job_rate_limits or (job_type is not None and job_type.rate_limit)
        target = ["type", name] if limited else ["queue", claimed.queue]
        delay = clamp_delay(outcome.delay or 1.0)
        return [claimed.job_id, claimed.execution, claimed.queue, delay, worker or False, [target]]

    def done_item(self, outcome: Outcome) -> list[Any]:
        claimed = outcome.claimed
        fallback: list[Any] | bool = False
        if outcome.effects:
            refused = Outcome.failure(
                claimed,
                "EffectsRefused",
                "its Redis effects could not be applied (a key of another type, or a counter that is not "
                "an integer); nothing of the attempt was written",
                retryable=False,
                job_type=outcome.job_type,
                payload=outcome.payload,
            )
            refused.ended_at = outcome.ended_at
            fallback = self.failed_item(refused)
        return [
            claimed.job_id,
            claimed.execution,
            claimed.queue,
            outcome.result_b64,
            self.result_ttl(claimed, outcome.job_type),
            self.settings.idempotency_ttl,
            claimed.attempt,
            claimed.started_at,
            outcome.ended_at,
            outcome.effects or False,
            fallback,
        ]

    def result_ttl(self, claimed: Claimed, job_type: JobType[Any] | None) -> int:
        if claimed.result_ttl is not None:
            return claimed.result_ttl
        if job_type is not None and job_type.keep_completed is not None:
            return job_type.keep_completed.ttl()
        if job_type is not None and job_type.result_ttl is not None:
            return job_type.result_ttl
        return self.settings.result_ttl

    def failed_item(self, outcome: Outcome, *, worker: str | None = None) -> list[Any]:
        """The failed item of workers/lua/step.lua for a failed attempt: a retry or a dead letter."""
        claimed = outcome.claimed
        policy = self.policy_of(claimed, outcome.job_type)
        decision = decide(
            claimed.attempt,
            policy,
            retryable=outcome.retryable,
            requested_delay=outcome.delay,
            rand=self.rand,
        )
        if outcome.exc_type in UNREADABLE:
            decision = DeadLetter(outcome.exc_type)
        meta = decode_meta(claimed.meta)
        meta.pop("flow_failed", None)  # flows: consumed by this failure, so a requeued parent runs
        history = append_failure(
            meta,
            Failure(
                attempt=claimed.attempt,
                exc_type=outcome.exc_type,
                message=outcome.message,
                traceback=outcome.traceback,
                started_at=iso(claimed.started_at),
                ended_at=iso(outcome.ended_at),
                worker=self.worker_name,
            ),
        )
        meta.update(
            job_type=outcome.job_type.name if outcome.job_type else None,
            attempt=claimed.attempt,
            max_attempts=policy.max_attempts,
            failures=history,
            last_error=f"{outcome.exc_type}: {outcome.message}"[:500],
        )
        item: list[Any] = [claimed.job_id, claimed.execution, claimed.queue]
        hook: dict[str, Any] | None = None
        if isinstance(decision, RetryAt):
            meta.update(next_run_at=iso(outcome.ended_at + decision.delay), state="retry scheduled")
            item += ["retry", decision.delay]
        else:
            meta.update(next_run_at=None, state="dead-lettered", dead_letter_reason=decision.reason)
            item += ["dead", 0]
            hook = self.hook_job(outcome, decision, history)
        item += [json.dumps(meta, separators=(",", ":")), encode_exc_string(history_text(history))]
        item += [hook or False, claimed.attempt, claimed.started_at, outcome.ended_at, worker or False]
        return item

    def shard_copy(self, queue: str, claimed: Claimed) -> str:
        """On Redis Cluster, the copy of sharded ``queue`` a hook job for ``claimed`` goes to: the
        one in the dead job's shard (the same slot: no relay), else one its id picks."""
        tags = shard_tags(self.settings.shards)
        _, at, group = claimed.queue.rpartition(GROUP)
        if not (at and group in tags):
            group = tags[zlib.crc32(claimed.job_id.encode()) % len(tags)]
        return sharded_queue(queue, group)

    def hook_job(
        self, outcome: Outcome, decision: DeadLetter, history: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        hook = self.registry.dead_letter_hook(outcome.job_type)
        if hook is None:
            return None
        payload, reason = outcome.payload, f"{decision.reason}: {outcome.exc_type}: {outcome.message}"[:1000]
        if payload is not None and size_over(dumps(payload), self.settings.max_payload_bytes) is not None:
            payload, reason = None, f"{reason} (its payload, too large for a notice, is on the dead letter)"
        notice = DeadLetterNotice(
            job_id=outcome.claimed.job_id,
            job_type=outcome.job_type.name if outcome.job_type else None,
            queue=outcome.claimed.queue,
            payload=payload,
            reason=reason,
            attempts=outcome.claimed.attempt,
            failures=[{k: v for k, v in entry.items() if k != "traceback"} for entry in history],
        )
        # the notice is bounded by construction (a payload within the limit, 20 failures of at most
        # 1,000 characters each): it is not refused for being a little over the payload limit
        options = NO_OPTIONS
        if self.relay is not None and hook.queue in self.registry.sharded:  # its copy in a shard
            options = EnqueueOptions(queue=self.shard_copy(hook.queue, outcome.claimed))
        spec = self.enqueuer.spec(hook, notice, options, sized=False)
        if self.relay is not None and tag_of(spec["queue"]) != tag_of(outcome.claimed.queue):
            # on Redis Cluster the hook's queue is in another slot: the step puts the job in this
            # queue's relay, and workers/relay.py moves it on (exactly once)
            spec["queue"] = relay_queue(outcome.claimed.queue)
        return spec
