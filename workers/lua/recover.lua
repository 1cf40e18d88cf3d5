--[[
  recover: settle the attempts of a worker that stopped heartbeating, and forget the worker.

  The caller read the dead worker's in-flight set and decided, per job, a retry (attempts
  left) or a dead letter, exactly as for any failed attempt. This script re-checks, atomically,
  that the worker is still silent (a worker that came back keeps its jobs) and that each run
  still owns its job, so several live workers may race to recover the same worker safely.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): ctx (as step.lua, worker = the dead worker), silent_since,
             failed (as step.lua), queues (the dead worker's queues)

  Output:
    {recovered, lost, dropped}, or {-1, {}, 0} if the worker is alive after all

  Events:
    one entry on the signal stream of each queue that got a job back
]]
--- @include "common"
--- @include "enqueue_job"
--- @include "settle"

local plan = cjson.decode(ARGV[2])
local ctx = plan.ctx
local seen = redis.call('ZSCORE', K.live_workers, ctx.worker)
if seen and tonumber(seen) > plan.silent_since then
  return {-1, {}, 0}
end

local recovered, lost, dropped = 0, {}, 0
for _, item in ipairs(plan.failed) do
  local result = fail(ctx, item)
  if result then
    recovered = recovered + 1
    dropped = dropped + result
  else
    lost[#lost + 1] = item[1]
  end
end

-- every run the set held was passed in: settled above, or already settled elsewhere
redis.call('DEL', inflight_key(ctx.worker))
redis.call('ZREM', K.live_workers, ctx.worker)
local rq_worker = K.rq_worker .. ctx.worker
redis.call('SREM', K.rq_workers, rq_worker)
for _, queue in ipairs(plan.queues) do
  redis.call('SREM', K.rq_workers_by_queue .. queue, rq_worker)
end
redis.call('DEL', rq_worker)
flush_touched()
return {recovered, lost, dropped}
