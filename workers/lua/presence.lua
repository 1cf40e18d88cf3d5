--[[
  presence: a worker registers, heartbeats or leaves, by the server's clock.

  Liveness is the sorted set K.live_workers (worker name -> time of its last heartbeat); rq's
  registration (rq:workers, rq:workers:<queue>, the rq:worker:<name> hash) keeps `rq info` and
  rq-dashboard truthful.

  Every heartbeat records the time of the last heartbeat of any worker, and may open the
  liveness grace (includes/liveness.lua): after Redis or every worker was stopped, stalled or
  restarted, no recovery presumes anyone dead until every worker had the time to heartbeat.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {mode = 'register' | 'beat' | 'leave', worker, queues, rq_ttl,
             ttl, stall_gap, grace, slack, info = {field, value, ...} (register), current_job (beat,
             or absent), claims = {{effect key, exec}, ...} (beat: renewed for claim_ttl_ms),
             watch = {job id, ...} (beat: the jobs it holds)}

  KEYS: every key it may touch (workers/presence.py _keys); leaving, the job keys of the runs in
        the in-flight set as the caller read it (a run not among them counts as unsettled)

  Output:
    register  1
    beat      {1, asked}, or {0, asked} if the worker had been forgotten (presumed dead, its runs
              recovered): it is registered again and must give up the runs it still holds.
              `asked`: the ids among `watch` (the jobs it holds) someone asked to stop (K.cancel)
    leave     1 when deregistered; 0 when runs of this worker are still unsettled: the worker
              is left marked silent since the epoch, so recovery takes its runs at once

  Events:
    none
]]
--- @include "common"
--- @include "liveness"

local plan = cjson.decode(ARGV[2])
local t = now()
local rq_worker = K.rq_worker .. plan.worker

local function beat()
  beat_liveness(plan)
  return redis.call('ZADD', K.live_workers, t, plan.worker)
end

local function register_rq(fields)
  own(rq_worker, 'hash')
  own(inflight_key(plan.worker), 'set')
  if usable(rq_worker, 'hash') then
    redis.call('HSET', rq_worker, unpack(fields))
    redis.call('EXPIRE', rq_worker, plan.rq_ttl)
  end
  if usable(K.rq_workers, 'set') then
    redis.call('SADD', K.rq_workers, rq_worker)
  end
  for _, queue in ipairs(plan.queues) do
    if usable(K.rq_workers_by_queue .. queue, 'set') then
      redis.call('SADD', K.rq_workers_by_queue .. queue, rq_worker)
    end
  end
end

if plan.mode == 'register' then
  redis.call('DEL', rq_worker)
  local fields = plan.info
  fields[#fields + 1] = 'birth'
  fields[#fields + 1] = iso(t)
  fields[#fields + 1] = 'last_heartbeat'
  fields[#fields + 1] = iso(t)
  register_rq(fields)
  beat()
  return 1
end

if plan.mode == 'beat' then
  local added = beat()
  local fields = {'last_heartbeat', iso(t), 'state', plan.current_job and 'busy' or 'idle'}
  if plan.current_job then
    fields[#fields + 1] = 'current_job'
    fields[#fields + 1] = plan.current_job
  end
  register_rq(fields)
  if not plan.current_job and usable(rq_worker, 'hash') then
    redis.call('HDEL', rq_worker, 'current_job') -- rq's convention for an idle worker
  end
  for _, claim in ipairs(plan.claims) do
    local key = K.effect_key .. claim[1]
    if redis.pcall('GET', key) == 'r:' .. claim[2] then
      redis.call('PEXPIRE', key, plan.claim_ttl_ms)
    end
  end
  local asked = {}
  if #plan.watch > 0 and usable(K.cancel, 'set') then
    local flags = redis.call('SMISMEMBER', K.cancel, unpack(plan.watch))
    for i, flag in ipairs(flags) do
      if flag == 1 then
        asked[#asked + 1] = plan.watch[i]
      end
    end
  end
  return {added == 1 and 0 or 1, asked}
end

-- leave
local inflight = inflight_key(plan.worker)
local members = usable(inflight, 'set') and redis.call('SMEMBERS', inflight) or {}
for _, run in ipairs(members) do
  local id, exec = string.match(run, '^(.*):([^:]*)$')
  -- a run the caller did not read before the call (its job key undeclared) counts as unsettled
  local owner = id and (not declared(K.job .. id) and exec or redis.pcall('HGET', K.job .. id, 'execution'))
  if owner == exec then
    redis.call('ZADD', K.live_workers, 0, plan.worker)
    return 0
  end
end
if usable(K.rq_workers, 'set') then
  redis.call('SREM', K.rq_workers, rq_worker)
end
for _, queue in ipairs(plan.queues) do
  if usable(K.rq_workers_by_queue .. queue, 'set') then
    redis.call('SREM', K.rq_workers_by_queue .. queue, rq_worker)
  end
end
if usable(rq_worker, 'hash') then
  redis.call('HSET', rq_worker, 'death', iso(t), 'state', 'dead')
  redis.call('HDEL', rq_worker, 'current_job')
  redis.call('EXPIRE', rq_worker, 60)
end
redis.call('ZREM', K.live_workers, plan.worker)
redis.call('DEL', inflight)
return 1
