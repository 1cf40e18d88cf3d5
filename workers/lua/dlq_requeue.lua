--[[
  dlq_requeue: move dead letters back to their origin queue with a fresh attempt budget.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {items = {{id, origin, meta_json}, ...}}   (at most 100: each LREM
             reads the list)

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
  local dlq, failed, jk = K.queue .. origin .. K.dlq_suffix, K.failed .. origin, K.job .. id
  if usable(dlq, 'list') and usable(K.queue .. origin, 'list') and usable(jk, 'hash')
      and redis.call('LREM', dlq, 1, id) > 0 then
    if usable(failed, 'zset') then
      redis.call('ZREM', failed, id)
    end
    redis.call('HDEL', jk, 'dead_lettered_at', 'execution', 'ran', 'lost', 'deferred')
    redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_iso(), 'attempt', '0', 'meta', item[3])
    requeue(origin, id, false)
    requeued[#requeued + 1] = id
  end
end
flush_touched()
return requeued
