--[[
  report: a running job's progress and log lines (ctx.progress, ctx.log), kept on the job.

  Only the run that owns the job may report: a run whose job was recovered from it, settled or
  handed back writes nothing. Progress is the job hash's `progress` field (JSON, bounded by the
  caller); log lines go to the list K.job_logs .. id, of which only the last `max_lines` are
  kept (LTRIM in the same call), expiring after `ttl` s unless settling gives it the job's own
  expiry (includes/settle.lua).

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {id, exec, queue, progress = <JSON text> or absent,
                           lines = {line, ...} or absent, max_lines, ttl, events = cap or false}

  Output:
    1 if written, 0 if the run no longer owns the job (nothing written)

  Events:
    `progress` {progress = <JSON text>} on K.job_events when events are on and progress was given
]]
--- @include "common"

local plan = cjson.decode(ARGV[2])
local jk = K.job .. plan.id
local owner = redis.pcall('HGET', jk, 'execution')
if owner ~= plan.exec then
  return 0
end
if plan.progress then
  redis.call('HSET', jk, 'progress', plan.progress)
  emit(plan.events, 'progress', plan.id, plan.queue, {'progress', plan.progress})
end
if plan.lines and #plan.lines > 0 then
  local lk = K.job_logs .. plan.id
  if own(lk, 'list') then
    redis.call('HSET', jk, 'logged', 1) -- settling then gives the log the job's expiry
    redis.call('RPUSH', lk, unpack(plan.lines))
    redis.call('LTRIM', lk, -plan.max_lines, -1)
    redis.call('EXPIRE', lk, plan.ttl)
  end
end
return 1
