"""Keys.enqueue_batch_keys declares what the per-job lists declare, for any mix of options."""

from __future__ import annotations

from workers.keys import Keys

JOBS = [
    {"id": "plain", "queue": "q1"},
    {"id": "prio", "queue": "q1", "priority": 5},
    {"id": "front", "queue": "q2", "at_front": True},
    {"id": "later", "queue": "q3", "delay": 60, "events": 100},
    {"id": "keyed", "queue": "q3", "enqueue_key": "t:k", "enqueue_key_ttl": 60},
]


def test_a_batch_declares_every_key_its_jobs_declare_alone() -> None:
    keys = Keys("p")
    for size in range(1, len(JOBS) + 1):
        for start in range(len(JOBS)):
            batch = (JOBS[start:] + JOBS[:start])[:size]
            alone = {key for job in batch for key in keys.enqueue_job_keys(job)}
            assert set(keys.enqueue_batch_keys(batch)) == alone, batch
