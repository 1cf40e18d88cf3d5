"""Short leases: one worker at a time does a periodic task (recovery scans, housekeeping).

A lease is a key set with NX and an expiry; it is never released, it lapses. A key under a
lease's name that has no expiry cannot be one of ours (hand-written garbage, or a copy made
without its TTL): it is replaced, so it cannot block the task for ever. Two workers may then
both believe they hold the lease for one round, which the tasks tolerate: every script they run
re-checks what it changes.
"""

from __future__ import annotations

from redis import Redis


def take(redis: Redis, key: str, owner: str, ms: int) -> bool:
    """Take the lease ``key`` for ``ms`` milliseconds; False if someone else holds it."""
    if redis.set(key, owner, nx=True, px=ms):
        return True
    if redis.pttl(key) == -1:
        redis.delete(key)
        return bool(redis.set(key, owner, nx=True, px=ms))
    return False
