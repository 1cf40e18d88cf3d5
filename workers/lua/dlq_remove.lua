--[[
  dlq_remove: delete dead letters, by id or by age, and count what was removed.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {origin, ids = {id, ...} or absent, before_iso = <rq timestamp> or absent,
                           limit, counted = true to add the removals to the dropped counter}
      ids         remove these ids (at most 100 per call: each LREM reads the list)
      before_iso  remove, from the head (oldest first), up to `limit` entries dead-lettered before
                  this time, and entries whose job hash is gone (the caller calls again while
                  `limit` were removed)

  Output:
    the number of entries removed

  Events:
    none
]]
--- @include "common"

local plan = cjson.decode(ARGV[2])
local origin = plan.origin
local dlq = K.queue .. origin .. K.dlq_suffix
local removed = 0
if not (usable(dlq, 'list') and usable(K.failed .. origin, 'zset')) then
  return 0
end

local function drop(id)
  redis.call('ZREM', K.failed .. origin, id)
  redis.call('DEL', K.job .. id, K.results .. id)
  removed = removed + 1
end

if plan.ids then
  for _, id in ipairs(plan.ids) do
    if redis.call('LREM', dlq, 1, id) > 0 then
      drop(id)
    end
  end
elseif plan.before_iso then
  while removed < plan.limit do
    local id = redis.call('LINDEX', dlq, 0)
    if not id then
      break
    end
    local at = redis.pcall('HGET', K.job .. id, 'dead_lettered_at')
    if type(at) == 'string' and at >= plan.before_iso then
      break
    end
    redis.call('LPOP', dlq)
    drop(id)
  end
end
if plan.counted and removed > 0 and own(K.dlq_dropped, 'hash') then
  redis.call('HINCRBY', K.dlq_dropped, origin, removed)
end
return removed
