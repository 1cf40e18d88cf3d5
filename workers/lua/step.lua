--[[
  step: settle a worker's finished attempts and claim its next jobs, in one call.

  This is the worker's hot path: one call per batch, whatever the batch holds.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON):
      ctx      {now, now_iso, worker, token, seq, claim_ttl_ms, defer_s, result_ttl,
                dlq_retention, dlq_max_length}
      done     {{id, exec, queue, result_b64, result_ttl, effect_ttl}, ...}
      failed   {{id, exec, queue, 'retry'|'dead', run_at, meta_json, exc_b64, hook_job?}, ...}
      released {{id, exec, queue}, ...}
      queues   queue names in priority order
      n        how many jobs to claim (0: settle only)

  Output:
    {jobs, duplicates, lost, deferred, stale, dropped, next_due}
      jobs        claimed jobs, see includes/claim.lua
      duplicates  {id, queue, job type} of jobs finished as duplicates of a done effect key
      lost        ids of settled attempts whose run no longer owned the job
      deferred    {id, queue, job type} of jobs put back: a live run holds their effect key
      stale       ids dropped from the queues with no runnable job behind them
      dropped     dead letters removed by the length cap
      next_due    earliest scheduled time among the queues, as a string ('-1': none)

  Events:
    one entry on the signal stream of each queue that got work or a scheduled job
]]
--- @include "common"
--- @include "enqueue_job"
--- @include "settle"
--- @include "claim"

local plan = cjson.decode(ARGV[2])
local ctx = plan.ctx
local lost = {}
local dropped = 0
local done_count, failed_count = 0, 0

for _, item in ipairs(plan.done) do
  if complete(ctx, item) then
    done_count = done_count + 1
  else
    lost[#lost + 1] = item[1]
  end
end
for _, item in ipairs(plan.failed) do
  local result = fail(ctx, item)
  if result then
    dropped = dropped + result
    failed_count = failed_count + 1
  else
    lost[#lost + 1] = item[1]
  end
end
for _, item in ipairs(plan.released) do
  if not release(ctx, item) then
    lost[#lost + 1] = item[1]
  end
end

local rq_worker = K.rq_worker .. ctx.worker
if done_count > 0 then
  redis.call('HINCRBY', rq_worker, 'successful_job_count', done_count)
end
if failed_count > 0 then
  redis.call('HINCRBY', rq_worker, 'failed_job_count', failed_count)
end

local jobs, duplicates, deferred, stale = {}, {}, {}, 0
if plan.n > 0 then
  jobs, duplicates, deferred, stale = claim(ctx, plan.queues, plan.n)
end
flush_touched()
return {jobs, duplicates, lost, deferred, stale, dropped, tostring(next_due(plan.queues))}
