"""Flows: a parent job that runs once all its children have ended, and reads their results.

As BullMQ's FlowProducer (and Sidekiq's batches)::

    flows = FlowProducer(redis, settings)
    flow = flows.add(
        FlowJob(build_report, {"name": "q4"}, children=[
            FlowJob(fetch_sales, {"region": "eu"}),
            FlowJob(fetch_sales, {"region": "us"}, options=EnqueueOptions(queue="us")),
        ]),
        flow_id="q4-report",
    )

- **Atomic.** The whole tree is written by one script (lua/flow.lua): the parent waits in
  rq's deferred registry of its queue (status ``deferred``), the leaves are queued on their own
  queues. Children may be parents themselves (nested flows).
- **Idempotent.** ``flow_id`` is the root job's id (its children are ``<flow id>-0``,
  ``<flow id>-1``, ``<flow id>-0-0``...): adding a flow whose root job exists creates nothing and
  says so. Without ``flow_id`` every job gets a fresh id.
- **The parent runs once, after all its children ended.** Every path that ends a job (success,
  dead letter, cancellation) tells its parent in the same script (lua/includes/flows.lua); the
  last one queues the parent. Its handler reads the children's outcomes with ``ctx.children()``.
- **A failed child.** ``on_failure`` of a child says what its dead letter (or cancellation) does
  to its parent: ``"fail_parent"`` (the default) dead-letters the parent at once with the reason
  ``ChildFailed: child <id> was dead-lettered``, without running it (its dead-letter hook runs as
  for any dead letter); ``"ignore"`` lets the parent run when the others have ended, and
  ``ctx.children()`` shows the failure. BullMQ's default leaves the parent waiting for ever
  (``failParentOnFailure`` and ``ignoreDependencyOnFailure`` are opt-in); chumon's default is
  BullMQ's ``failParentOnFailure``, because a job that waits for ever breaks the promise that
  everything ends. A dead-lettered parent requeued from its dead-letter queue runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import BadJob, decode_data, decode_meta, decode_result, readable
from workers.enqueue import NO_OPTIONS, Enqueuer, new_job_id
from workers.errors import RuntimeFault
from workers.jobtypes import JobType
from workers.keys import Keys, tag_of
from workers.layout import Family
from workers.options import EnqueueOptions

Policy = Literal["fail_parent", "ignore"]
MAX_NODES = 1000  # jobs in one flow: one script call writes them all
MAX_DEPTH = 16
MAX_TREE = 5000  # nodes `tree` reads before it stops


@dataclass(frozen=True)
class FlowJob:
    """One job of a flow: its type, payload and options, its children, and (as a child) what its
    failure does to its parent."""

    job_type: JobType[Any]
    payload: BaseModel | Mapping[str, Any]
    options: EnqueueOptions | None = None
    children: Sequence[FlowJob] = ()
    on_failure: Policy = "fail_parent"


@dataclass(frozen=True)
class Flow:
    id: str  # the root job's id
    created: bool  # False: a flow with this id existed already, nothing was written
    job_ids: list[str]  # every job of the flow, root first (pre-order)


class FlowRefused(RuntimeFault):
    """A job id of the flow is taken, or a queue's keys hold garbage: nothing was written."""


@dataclass(frozen=True)
class ChildResult:
    """What a parent sees of one child (``ctx.children()``)."""

    id: str
    job_type: str | None
    status: str  # finished, failed (dead-lettered), canceled; while it runs: its job's status
    result: Any = None  # its return value, if finished
    error: str | None = None  # its last error, if failed


class FlowNode(BaseModel):
    """One job of a flow as ``chumon job tree`` shows it."""

    id: str
    job_type: str | None
    queue: str | None
    status: str  # the job's status; 'expired' once its hash is gone
    on_failure: str | None = None  # as a child
    waiting_for: int = 0  # as a parent: children not ended yet
    children: list[FlowNode] = []


class FlowProducer:
    """Creates flows. Cheap to build, like Enqueuer."""

    def __init__(self, redis: Redis, settings: Any, *, enqueuer: Enqueuer | None = None) -> None:
        self.enqueuer = enqueuer or Enqueuer(redis, settings)
        self.redis = redis
        self.keys = self.enqueuer.keys

    def add(self, flow: FlowJob, *, flow_id: str | None = None) -> Flow:
        """Create the flow in one script call; validates every payload and option first."""
        nodes = list(self._nodes(flow, flow_id or new_job_id(), None, None, 0, fixed=flow_id is not None))
        if len(nodes) > MAX_NODES:
            raise ValueError(f"a flow holds at most {MAX_NODES} jobs, not {len(nodes)}")
        family = self._family(nodes)
        created, problems = family.scripts.run(
            "flow", {"nodes": nodes}, keys=family.keys.flow_create_keys(nodes)
        )
        if int(created) < 0:
            what = "; ".join(f"{readable(k)} {readable(w)}" for k, w in problems[:3])
            raise FlowRefused(f"flow {nodes[0]['id']} not created: {what}")
        return Flow(str(nodes[0]["id"]), int(created) == 1, [str(node["id"]) for node in nodes])

    def _family(self, nodes: list[dict[str, Any]]) -> Family:
        """The keys and scripts of the flow's queues: on Redis Cluster they must share one slot (one
        script creates the flow, and settling a child tells its parent), so one group."""
        layout = self.enqueuer.layout
        tags = sorted({tag_of(node["queue"]) for node in nodes})
        if layout.cluster and len(tags) > 1:
            raise ValueError(
                f"on Redis Cluster a flow's queues must share one slot, and these are in {len(tags)} "
                f"({', '.join(tags[:5])}): put them in one group, e.g. 'parents@{tags[0]}' and "
                f"'children@{tags[0]}' (docs/operations.md, Redis Cluster)"
            )
        layout.index([node["queue"] for node in nodes])
        return layout.family(nodes[0]["queue"])

    def _nodes(
        self, job: FlowJob, job_id: str, parent: str | None, policy: Policy | None, depth: int, *, fixed: bool
    ) -> Iterator[dict[str, Any]]:
        if depth > MAX_DEPTH:
            raise ValueError(f"a flow is at most {MAX_DEPTH} levels deep")
        options = job.options or NO_OPTIONS
        if options.idempotency_key is not None:
            raise ValueError("a flow's jobs take no idempotency_key: the flow id makes the flow idempotent")
        if job.children and (options.delay or options.run_at):
            raise ValueError("a flow's parent takes no delay or run_at: it runs when its children have ended")
        spec = self.enqueuer.spec(job.job_type, job.payload, options, job_id=job_id)
        if parent is not None:
            spec["fields"] += ["flow_parent", parent, "flow_policy", policy]
        ids = [f"{job_id}-{i}" if fixed else new_job_id() for i in range(len(job.children))]
        spec["children"] = ids
        yield spec
        for child, child_id in zip(job.children, ids, strict=True):
            if child.on_failure not in ("fail_parent", "ignore"):
                raise ValueError(f"on_failure must be 'fail_parent' or 'ignore', not {child.on_failure!r}")
            yield from self._nodes(child, child_id, job_id, child.on_failure, depth + 1, fixed=fixed)


def children_of(redis: Redis, keys: Keys, parent: str) -> list[ChildResult]:
    """The children of ``parent`` and how each ended, in the order they were given ([] if none)."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.flow_children(parent), 0, -1)
        pipe.hgetall(keys.flow_results(parent))
        ids_raw, results_raw = pipe.execute()
    ids = [readable(raw) or "" for raw in ids_raw]
    results = {readable(k): v for k, v in results_raw.items()}
    with redis.pipeline(transaction=False) as pipe:
        for child in ids:
            pipe.hmget(keys.job(child), "job_type", "status", "meta")
        rows = pipe.execute(raise_on_error=False)
    found = []
    for child, row in zip(ids, rows, strict=True):
        job_type, status, meta = row if isinstance(row, list) else (None, None, None)
        outcome: bytes = results.get(child) or b""
        result, error = None, None
        if outcome[:1] == b"d":
            state, result = "finished", decode_result(outcome[1:])
        elif outcome[:1] in (b"f", b"c"):
            state = "failed" if outcome[:1] == b"f" else "canceled"
            last = decode_meta(meta).get("last_error")
            error = last if isinstance(last, str) else None
        else:
            state = readable(status) or "expired"
        found.append(ChildResult(child, readable(job_type), state, result, error))
    return found


def child_failure(meta: bytes) -> str | None:
    """The reason a flow parent is to be dead-lettered (a child failed under 'fail_parent'), or None.

    The flag is written by lua/includes/flows.lua into the parent's ``meta`` when it releases it;
    the settler drops it with the failure it causes, so a requeued parent runs.
    """
    if b'"flow_failed"' not in meta:  # the common case, without decoding anything
        return None
    reason = decode_meta(meta).get("flow_failed")
    return reason if isinstance(reason, str) else None


def tree(redis: Redis, keys: Keys, job_id: str) -> FlowNode | None:
    """The whole flow ``job_id`` belongs to, from its root (the job alone if it is in no flow)."""
    root, seen = job_id, {job_id}
    for _ in range(MAX_DEPTH + 1):
        parent = readable(_hget(redis, keys.job(root), "flow_parent"))
        if not parent or parent in seen:
            break
        root = parent
        seen.add(parent)
    if not redis.exists(keys.job(root)) and not redis.exists(keys.flow_children(root)):
        return None
    budget = [MAX_TREE]
    return _node(redis, keys, root, budget)


def _hget(redis: Redis, key: str, name: str) -> bytes | str | None:
    try:
        value: bytes | str | None = redis.hget(key, name)
    except ResponseError:  # not a hash: no parent to follow
        return None
    return value


def _node(redis: Redis, keys: Keys, job_id: str, budget: list[int]) -> FlowNode:
    budget[0] -= 1
    with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.job(job_id), "job_type", "data", "origin", "status", "flow_policy")
        pipe.lrange(keys.flow_children(job_id), 0, -1)
        pipe.scard(keys.flow_pending(job_id))
        row, children, pending = pipe.execute(raise_on_error=False)
    type_raw, data, origin, status, policy = row if isinstance(row, list) else [None] * 5
    job_type = readable(type_raw)
    if job_type is None and data:
        try:
            job_type = decode_data(data)[0]
        except BadJob:
            job_type = None
    node = FlowNode(
        id=job_id,
        job_type=job_type,
        queue=readable(origin),
        status=readable(status) or "expired",
        on_failure=readable(policy),
        waiting_for=pending if isinstance(pending, int) else 0,
    )
    for raw in children if isinstance(children, list) else []:
        if budget[0] <= 0:
            break
        node.children.append(_node(redis, keys, readable(raw) or "", budget))
    return node
