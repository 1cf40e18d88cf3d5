--[[
  dlq_remove: delete dead letters, by id or by age, and count what was removed.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {origin, ids = {id, ...} or absent, before_iso = <rq timestamp> or absent,
                           counted = true to add the removals to the dropped counter}
      ids         remove these ids
      before_iso  remove, from the head (oldest first), every entry dead-lettered before this
                  time, and every entry whose job hash is gone

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
  while true do
    local id = redis.call('LINDEX', dlq, 0)
    if not id then
      break
    end
    local at = redis.call('HGET', K.job .. id, 'dead_lettered_at')
    if at and at >= plan.before_iso then
      break
    end
    redis.call('LPOP', dlq)
    drop(id)
  end
end
if plan.counted and removed > 0 then
  redis.call('HINCRBY', K.dlq_dropped, origin, removed)
end
return removed
