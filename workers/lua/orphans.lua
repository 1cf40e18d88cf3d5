--[[
  orphans: find the runs of one queue whose worker is dead, from rq's running registry itself.

  Recovery does not depend on a dead worker's own bookkeeping: every run is a member
  `<job id>:<execution>` of `rq:wip:<queue>` with score +inf (chumon's mark: rq's own runs have
  a finite score), and its job hash names the worker that claimed it. A run is an orphan when
  the job still belongs to that execution and the worker has not heartbeated for `ttl` seconds
  by the server's clock. While the liveness grace holds (after Redis or every worker was
  silent: includes/liveness.lua), only workers that were silent before that are judged, so no
  live worker is presumed dead.

  An orphan that never started (the worker claimed it into its prefetch buffer and died) goes
  back to the head of its queue here, without using an attempt, unless unstarted runs of it
  were lost LOST_LIMIT times already (a job that kills its worker before it can say it started):
  then it is returned like a started one, and costs an attempt. Started orphans are returned
  for the caller to settle as failed attempts (recover.lua).

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {queue, offset, count (at most 200), ttl, stall_gap, grace, slack,
             events (the job event stream's cap, or false: a `released` event per run put back)}

  KEYS: what it may touch for the runs the caller read on that page just before (workers/readkeys.py):
        a run it was not told of is left for the next scan

  Output:
    {scanned, orphans, released, stale}
      scanned   members read (fewer than count: the end of the registry)
      orphans   {id, exec, worker, attempt, lost, data, meta, origin, timeout, retry, effect_key,
                 started_at} of started runs (attempt is the attempt that ran)
      released  ids put back unstarted
      stale     members without a job that still belongs to them, removed

  Events:
    one entry on the signal stream of the queue, when a run was put back
]]
--- @include "common"
--- @include "liveness"
--- @include "enqueue_job"
--- @include "effects"
--- @include "flows"
--- @include "settle"

local LOST_LIMIT = 3
local plan = cjson.decode(ARGV[2])
local since = grace_since(plan)

local wk = K.wip .. plan.queue
if not usable(wk, 'zset') then
  return {0, {}, {}, 0}
end
local members = redis.call('ZRANGEBYSCORE', wk, '+inf', '+inf', 'LIMIT', plan.offset, plan.count)
local orphans, released, stale = {}, {}, 0
local FIELDS = {'execution', 'worker_name', 'attempt', 'ran', 'lost', 'data', 'meta', 'origin', 'timeout',
  'retry', 'effect_key', 'started_at'}

for _, run in ipairs(members) do
  local id, exec = string.match(run, '^(.*):([^:]*)$')
  local f = id and declared(K.job .. id) and redis.pcall('HMGET', K.job .. id, unpack(FIELDS))
  if f == false then
    -- a run the caller did not read (it joined the registry since): left for the next scan
  elseif not f or f.err or f[1] ~= exec then
    redis.call('ZREM', wk, run)
    stale = stale + 1
  else
    local worker = f[2] or ''
    local seen = redis.call('ZSCORE', K.live_workers, worker)
    if presumed_dead(tonumber(seen), plan, since) then
      local lost = whole(f[5], 0, 1000000) or 0
      if f[4] == exec or lost >= LOST_LIMIT then
        local attempt = whole(f[3], 0, 1000000) or 0
        if f[4] ~= exec then
          attempt = attempt + 1
        end
        orphans[#orphans + 1] = {id, exec, worker, attempt, lost, f[6] or '', f[7] or '', f[8] or '',
          f[9] or '', f[10] or '', f[11] or '', f[12] or ''}
      elseif declared(inflight_key(worker))
          and release({events = plan.events}, {id, exec, plan.queue, worker, lost + 1}) == true then
        released[#released + 1] = id
      end
    end
  end
end
flush_touched()
return {#members, orphans, released, stale}
