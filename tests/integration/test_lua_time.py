"""The scripts' timestamps: iso() in workers/lua/includes/common.lua formats a Unix time as rq does
(``%Y-%m-%dT%H:%M:%S.%fZ``, UTC), also across the second it caches, leap days, and a fraction
that rounds up to the next second."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime

from redis import Redis

from workers.keys import Keys
from workers.scripts import source

DRIVER = """
local out = {}
for _, t in ipairs(cjson.decode(ARGV[2])) do
  out[#out + 1] = iso(t)
end
return out
"""


def python_iso(ts: float) -> str:
    """The same rounding as the script's (to the nearest microsecond of the fraction)."""
    secs = math.floor(ts)
    micro = math.floor((ts - secs) * 1_000_000 + 0.5)
    secs, micro = (secs + 1, micro - 1_000_000) if micro >= 1_000_000 else (secs, micro)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micro:06d}Z"


def test_iso_matches_python_for_every_kind_of_time(redis: Redis) -> None:
    common = source("step").split("local plan = cjson.decode(ARGV[2])")[0]
    rng = random.Random(7)
    times = [rng.uniform(0, 4_102_444_800) for _ in range(300)]  # 1970 .. 2100
    times += [1_796_215_287 + i / 7 for i in range(30)]  # many in one second, then the next
    times += [951_782_399.9999996, 951_782_400.25, 1_709_164_800.5, 1_796_169_600.0]  # rounding, leap days
    times += [1_796_215_287.5, 1_796_215_286.5, 1_796_215_287.000001]  # back and forth across the cache
    got = redis.eval(common + DRIVER, 0, Keys().lua_keyspace, json.dumps(times))
    assert [g.decode() for g in got] == [python_iso(t) for t in times]
