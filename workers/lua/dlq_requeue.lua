--[[
  dlq_requeue: move dead letters back to their origin queue with a fresh attempt budget.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {now_iso, items = {{id, origin, meta_json}, ...}}

  Output:
    the ids that were requeued (an id no longer in its dead-letter queue is skipped)

  Events:
    one entry on the signal stream of each origin queue that got a job back
]]
--- @include "common"

local plan = cjson.decode(ARGV[2])
local requeued = {}
for _, item in ipairs(plan.items) do
  local id, origin = item[1], item[2]
  if redis.call('LREM', K.queue .. origin .. K.dlq_suffix, 1, id) > 0 then
    local jk = K.job .. id
    redis.call('ZREM', K.failed .. origin, id)
    redis.call('HDEL', jk, 'dead_lettered_at', 'execution')
    redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', plan.now_iso, 'attempt', '0', 'meta', item[3])
    push(origin, id, false)
    requeued[#requeued + 1] = id
  end
end
flush_touched()
return requeued
