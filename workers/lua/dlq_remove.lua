--[[
  dlq_remove: delete dead letters, by id or by age, and count what was removed.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {origin, ids = {id, ...} or absent, before_iso = <rq timestamp> or absent,
                           head = n, counted = true to add the removals to the dropped counter}
      ids         remove these ids (at most 100 per call: each LREM reads the list)
      before_iso  remove, from the head (oldest first), entries dead-lettered before this time, and
                  entries whose job hash is gone, as long as the list's head is the next of the
                  `head` ids the caller read there: KEYS[2 + 2i] is the i-th one's job key
  KEYS: the dead-letter list, the failed registry, the dropped counter, then each id's job key and
        result key (workers/keys.py dead_letter_keys)

  Output:
    with ids: the number of entries removed; with before_iso: {removed, changed}, changed 1 when
    the list's head was not the next id the caller read (it reads the head again)

  Events:
    none
]]
--- @include "common"

local plan = cjson.decode(ARGV[2])
local origin = plan.origin
local dlq = K.queue .. origin .. K.dlq_suffix
local removed = 0
if not (usable(dlq, 'list') and usable(K.failed .. origin, 'zset')) then
  return plan.ids and 0 or {0, 0}
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
  local changed = 0
  for i = 1, plan.head do
    local id = redis.call('LINDEX', dlq, 0)
    if not id then
      break
    elseif K.job .. id ~= KEYS[2 + 2 * i] then
      changed = 1 -- another removal came first: only the ids read and declared are touched
      break
    end
    local at = redis.pcall('HGET', K.job .. id, 'dead_lettered_at')
    if type(at) == 'string' and at >= plan.before_iso then
      break
    end
    redis.call('LPOP', dlq)
    drop(id)
  end
  if plan.counted and removed > 0 and own(K.dlq_dropped, 'hash') then
    redis.call('HINCRBY', K.dlq_dropped, origin, removed)
  end
  return {removed, changed}
end
if plan.counted and removed > 0 and own(K.dlq_dropped, 'hash') then
  redis.call('HINCRBY', K.dlq_dropped, origin, removed)
end
return removed
