--[[
  recover: settle started runs of dead workers as failed attempts ("WorkerLost").

  The caller found them with orphans.lua and decided, per run, a retry (attempts left; at once,
  since a crash says nothing about the job) or a dead letter, exactly as for any failed attempt.
  This script re-checks, atomically, that each run's worker is still presumed dead
  (includes/liveness.lua: a worker that came back keeps its runs) and that the run still owns
  its job, so several live workers may race to recover the same runs safely.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): ctx {dlq_retention, dlq_max_length}, ttl, stall_gap, grace, slack,
             failed {<failed item as step.lua's, with the dead worker as its 12th field>, ...}
  KEYS: every key settling those runs may touch, read just before (workers/readkeys.py
        recover_keys); a run whose keys were not read (its flow parent, say) is held, untouched

  Output:
    {recovered, lost, held, dropped}
      recovered  runs settled
      lost       ids whose run no longer owned the job, or whose worker is alive after all
      held       ids not settled because a key they need holds garbage
      dropped    dead letters removed by the length cap

  Events:
    one entry on the signal stream of each queue that got a job back; with ctx.events, a
    `stalled` job event per run recovered, then its `failed` and `retrying`/`dead_lettered`
]]
--- @include "common"
--- @include "liveness"
--- @include "enqueue_job"
--- @include "effects"
--- @include "flows"
--- @include "settle"

local plan = cjson.decode(ARGV[2])
local ctx = plan.ctx
local since = grace_since(plan)
local recovered, lost, held, dropped = 0, {}, {}, 0
for _, item in ipairs(plan.failed) do
  local seen = redis.call('ZSCORE', K.live_workers, item[12])
  local result = false
  if presumed_dead(tonumber(seen), plan, since) then
    if ctx.events and owner_of(item[1], item[2]) then
      emit(ctx.events, 'stalled', item[1], item[3], {'worker', item[12]})
    end
    result = fail(ctx, item)
  end
  if result == 'held' then
    held[#held + 1] = item[1]
  elseif result then
    recovered = recovered + 1
    dropped = dropped + result
  else
    lost[#lost + 1] = item[1]
  end
end
flush_touched()
return {recovered, lost, held, dropped}
