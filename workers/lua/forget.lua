--[[
  forget: remove the traces of workers that stopped heartbeating and hold no run any more.

  A silent worker (no heartbeat for `ttl` seconds by the server's clock) whose runs have all
  been settled or recovered is forgotten: its liveness entry, in-flight set and rq
  registration go. A run it still owns that is missing from rq's running registry (hand-made
  damage) is put back there, so orphans.lua recovers it; such a worker is kept until then.
  While the liveness grace holds, only workers already silent before it are judged.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {ttl, count (workers per call, at most 50), stall_gap, grace, slack}

  Output:
    {forgotten, repaired}: names of the workers forgotten, and how many runs were put back in
    the running registry

  Events:
    none
]]
--- @include "common"
--- @include "liveness"

local plan = cjson.decode(ARGV[2])
local since = grace_since(plan)

local forgotten, repaired = {}, 0
local silent = redis.call('ZRANGEBYSCORE', K.live_workers, '-inf', now() - plan.ttl, 'LIMIT', 0, plan.count)
local function forget(worker)
  local inflight = inflight_key(worker)
  local owns = false
  local members = usable(inflight, 'set') and redis.call('SRANDMEMBER', inflight, 200) or {}
  for _, run in ipairs(members) do
    local id, exec = string.match(run, '^(.*):([^:]*)$')
    local f = id and redis.pcall('HMGET', K.job .. id, 'execution', 'origin')
    if type(f) == 'table' and not f.err and f[1] == exec and f[2] then
      owns = true
      local wk = K.wip .. f[2]
      if usable(wk, 'zset') and not redis.call('ZSCORE', wk, run) then
        redis.call('ZADD', wk, '+inf', run)
        repaired = repaired + 1
      end
    elseif usable(inflight, 'set') then
      redis.call('SREM', inflight, run)
    end
  end
  if owns or (usable(inflight, 'set') and redis.call('SCARD', inflight) > 0) then
    return
  end
  local rq_worker = K.rq_worker .. worker
  local queues = usable(rq_worker, 'hash') and redis.call('HGET', rq_worker, 'queues')
  if usable(K.rq_workers, 'set') then
    redis.call('SREM', K.rq_workers, rq_worker)
  end
  if queues then
    for queue in string.gmatch(queues, '[^,]+') do
      if usable(K.rq_workers_by_queue .. queue, 'set') then
        redis.call('SREM', K.rq_workers_by_queue .. queue, rq_worker)
      end
    end
  end
  redis.call('DEL', rq_worker, inflight)
  redis.call('ZREM', K.live_workers, worker)
  forgotten[#forgotten + 1] = worker
end

for _, worker in ipairs(silent) do
  if presumed_dead(tonumber(redis.call('ZSCORE', K.live_workers, worker)), plan, since) then
    forget(worker)
  end
end
return {forgotten, repaired}
