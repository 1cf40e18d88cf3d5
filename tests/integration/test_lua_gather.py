"""The step script's gathered writes (workers/lua/includes/common.lua: gather, flush_gathered,
guarded): members written to one key in one command, and never lost when the call fails half-way."""

from __future__ import annotations

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from workers.keys import Keys
from workers.scripts import source

HEAD = source("step").split("local plan = cjson.decode(ARGV[2])")[0] + "\ngathering = true\n"


def run(redis: Redis, body: str) -> object:
    return redis.eval(HEAD + body, 0, Keys().lua_keyspace, "{}")


def test_members_of_one_key_go_out_in_one_command(redis: Redis) -> None:
    redis.config_resetstat()
    run(redis, """
      for i = 1, 2500 do gather('ZADD', 'test:z', i, 'm' .. i) end
      for i = 1, 10 do gather('SADD', 'test:s', 'm' .. i) end
      flush_gathered()
      return 1
    """)  # fmt: skip
    stats = redis.info("commandstats")
    assert redis.zcard("test:z") == 2500 and redis.scard("test:s") == 10
    # at most 1,000 members a command
    assert stats["cmdstat_zadd"]["calls"] == 3 and stats["cmdstat_sadd"]["calls"] == 1


def test_a_call_failing_half_way_still_writes_what_it_gathered(redis: Redis) -> None:
    with pytest.raises(ResponseError, match="half way"):
        run(redis, """
          guarded(function()
            redis.call('HSET', 'test:job', 'status', 'started')
            gather('ZADD', 'test:running', '+inf', 'job:1')
            error('half way')
          end)
          return 1
        """)  # fmt: skip
    assert redis.hget("test:job", "status") == b"started"
    assert redis.zscore("test:running", "job:1") == float("inf")  # not left out of its registry


def test_a_member_write_to_a_key_of_another_type_is_reported_and_left_alone(redis: Redis) -> None:
    redis.set("test:running", "garbage")
    problems = run(redis, """
      gather('ZADD', 'test:running', '+inf', 'job:1')
      gather('ZADD', 'test:other', 1, 'job:2')
      flush_gathered()
      return problems
    """)  # fmt: skip
    assert redis.get("test:running") == b"garbage" and redis.zscore("test:other", "job:2") == 1
    assert problems == [[b"test:running", b"holds a string, not a zset: left alone"]]
