--[[
  step: record started attempts, settle a worker's finished ones and claim its next jobs, in
  one call.

  This is the worker's hot path: one call per batch, whatever the batch holds. The worker
  sends at most 256 items to settle per call and a claim budget, so no call holds Redis for
  more than a few milliseconds, whatever the queues hold.

  Input:
    KEYS     every key the call may touch (workers/stepkeys.py): the worker's own and its queues',
             those of the runs it settles, and the jobs at the head of each queue, read just
             before with their effect keys and types. The claim takes only jobs it was told of:
             an id it meets that was not read goes back where it was and ends the claim
             (`exhausted`: the worker reads again at once); one it needs more of is `wanted`
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON):
      ctx      {worker, token, seq, claim_ttl_ms, defer_s, result_ttl, budget, dlq_retention,
                dlq_max_length}
      started  {{id, exec, attempt, started_at}, ...}       handlers that began (settle.lua)
      done     {{id, exec, queue, result_b64, result_ttl, effect_ttl, attempt, started_at,
                 ended_at, effects|false, fallback|false}, ...}
      failed   {{id, exec, queue, 'retry'|'dead', delay, meta_json, exc_b64, hook_job|false,
                 attempt, started_at, ended_at, false}, ...}
      throttled {{id, exec, queue, delay, false, {{kind, name}, ...}}, ...}   (RateLimited)
      cancelled {{id, exec, queue, false}, ...}      (the job raised Cancelled)
      released {{id, exec, queue, false, false}, ...}
      kept     {{id, job type, 'completed'|'failed', count|false, age|false}, ...}
               retention per job type, applied after settling (includes/retention.lua)
      queues   queue names in priority order
      n        how many jobs to claim (0: settle only)

  Output:
    {jobs, duplicates, lost, deferred, stale, dropped, next_due, held, refused, quarantined,
     exhausted, problems, now, wanted}
      jobs         claimed jobs, see includes/claim.lua
      duplicates   {id, queue, job type} of jobs finished as duplicates of a done effect key
      lost         ids of settled attempts whose run no longer owned the job
      deferred     {id, queue, job type} of jobs put back: a live run holds their effect key
      stale        count of ids dropped from the queues with no runnable job behind them
      dropped      dead letters removed by the length cap
      next_due     earliest scheduled time among the queues, or when a rate limit or throttle
                   that held a queue back lifts, as a string ('-1': none)
      held         ids of items not settled because a key they need holds garbage (kept by the
                   worker, tried again)
      refused      {id, reason} of completed jobs whose Redis effects were refused (dead-lettered)
      quarantined  count of ids quarantined (invalid id, job key not a hash)
      exhausted    1 if the claim budget ran out or the claim met an id it was not told of (more may
                   be waiting), else 0
      problems     {key, what} of keys holding garbage, left alone
      now          the server's time, as a string (workers keep their clock's offset from it)
      wanted       ids put back because the call was not told enough of them (a type or an effect key
                   not read, a duplicate in a flow): the next call declares what the worker reads of them

  Events:
    one entry on the signal stream of each queue that got work or a scheduled job;
    with ctx.events (CHUMON_JOB_EVENTS), job lifecycle events on K.job_events (workers/events.py)
]]
--- @include "common"
--- @include "enqueue_job"
--- @include "effects"
--- @include "flows"
--- @include "settle"
--- @include "claim"
--- @include "retention"

local plan = cjson.decode(ARGV[2])
local ctx = plan.ctx
gathering = true -- registry and set members are written once per key and call (common.lua gather)
results_in_hash = ctx.results_in_hash == true
local lost, held, refused = {}, {}, {}
local dropped = 0
local done_count, failed_count = 0, 0

local function settle_all()
  for _, item in ipairs(plan.started) do
    mark_started(item)
  end
  for _, item in ipairs(plan.done) do
    local result = complete(ctx, item)
    if result == true then
      done_count = done_count + 1
    elseif result == 'held' then
      held[#held + 1] = item[1]
    elseif result then
      refused[#refused + 1] = {item[1], result[2]}
      dropped = dropped + result[3]
      failed_count = failed_count + 1
    else
      lost[#lost + 1] = item[1]
    end
  end
  for _, item in ipairs(plan.failed) do
    local result = fail(ctx, item)
    if result == 'held' then
      held[#held + 1] = item[1]
    elseif result then
      dropped = dropped + result
      failed_count = failed_count + 1
    else
      lost[#lost + 1] = item[1]
    end
  end
  -- runs that end without a result: slowed down, cancelled, handed back
  for _, section in ipairs({{plan.throttled, throttle}, {plan.cancelled, cancel_run}, {plan.released, release}}) do
    for _, item in ipairs(section[1] or {}) do
      local result = section[2](ctx, item)
      if result == 'held' then
        held[#held + 1] = item[1]
      elseif not result then
        lost[#lost + 1] = item[1]
      end
    end
  end
end

guarded(settle_all) -- retention below reads the finished registries

-- retention per job type: only for types that keep their last N (or dead letters for an age)
for _, item in ipairs(plan.kept or {}) do
  dropped = dropped + keep_recent(ctx, item)
end

local rq_worker = K.rq_worker .. ctx.worker
if done_count > 0 or failed_count > 0 then -- rq's counters, under pcall: garbage there is left alone
  if done_count > 0 then
    redis.pcall('HINCRBY', rq_worker, 'successful_job_count', done_count)
  end
  if failed_count > 0 then
    redis.pcall('HINCRBY', rq_worker, 'failed_job_count', failed_count)
  end
end

local jobs, duplicates, deferred, stale, quarantined, exhausted, limited_until = {}, {}, {}, 0, 0, false, -1
if plan.n > 0 then
  jobs, duplicates, deferred, stale, quarantined, exhausted, limited_until =
    guarded(claim, ctx, plan.queues, plan.n)
end
flush_touched()
local due = next_due(plan.queues)
if limited_until >= 0 and (due < 0 or limited_until < due) then
  due = limited_until
end
return {jobs, duplicates, lost, deferred, stale, dropped, string.format('%.6f', due), held, refused,
  quarantined, exhausted and 1 or 0, problems, string.format('%.6f', now()), wanted}
