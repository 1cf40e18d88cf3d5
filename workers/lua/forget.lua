--[[
  forget: remove the traces of workers that stopped heartbeating and hold no run any more.

  A silent worker (no heartbeat for `ttl` seconds by the server's clock) whose runs have all
  been settled or recovered is forgotten: its liveness entry, in-flight set and rq
  registration go. A run it still owns that is missing from rq's running registry (hand-made
  damage) is put back there, so orphans.lua recovers it; such a worker is kept until then.
  While the liveness grace holds, only workers already silent before it are judged.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {ttl, count (workers per call, at most 50), stall_gap, grace, slack,
             read = {{worker, {run, ...}}, ...}: the silent workers the caller found and the runs
             it read of each one's in-flight set}
  KEYS: what it may touch for those (workers/recovery.py Reaper._silent): a worker, run or queue
        the caller did not read is left for the next call

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
local read = {} -- worker -> the runs of its in-flight set the caller read (and declared the keys of)
for _, entry in ipairs(plan.read) do
  read[entry[1]] = entry[2]
end

-- The queues a worker registered for (rq's hash), if the call declared their registrations.
local function registered_queues(rq_worker)
  local raw = usable(rq_worker, 'hash') and redis.call('HGET', rq_worker, 'queues')
  local queues = {}
  for queue in string.gmatch(raw or '', '[^,]+') do
    if not declared(K.rq_workers_by_queue .. queue) then
      return nil
    end
    queues[#queues + 1] = queue
  end
  return queues
end

local function forget(worker)
  local inflight = inflight_key(worker)
  local rq_worker = K.rq_worker .. worker
  if not (declared(inflight) and declared(rq_worker)) then
    return -- silent only since the caller read: the next call judges it
  end
  local owns = false
  local members = usable(inflight, 'set') and (read[worker] or redis.call('SRANDMEMBER', inflight, 200)) or {}
  for _, run in ipairs(members) do
    local id, exec = string.match(run, '^(.*):([^:]*)$')
    local f = id and declared(K.job .. id) and redis.call('SISMEMBER', inflight, run) == 1
      and redis.pcall('HMGET', K.job .. id, 'execution', 'origin')
    if type(f) == 'table' and not f.err and f[1] == exec and f[2] and not declared(K.wip .. f[2]) then
      owns = true -- its queue is not the one the caller read: kept, and judged next time
    elseif type(f) == 'table' and not f.err and f[1] == exec and f[2] then
      owns = true
      local wk = K.wip .. f[2]
      if usable(wk, 'zset') and not redis.call('ZSCORE', wk, run) then
        redis.call('ZADD', wk, '+inf', run)
        repaired = repaired + 1
      end
    elseif f ~= false and usable(inflight, 'set') then
      redis.call('SREM', inflight, run)
    end
  end
  if owns or (usable(inflight, 'set') and redis.call('SCARD', inflight) > 0) then
    return
  end
  local queues = registered_queues(rq_worker)
  if not queues then
    return -- registered for a queue the caller did not read: judged next time
  end
  if usable(K.rq_workers, 'set') then
    redis.call('SREM', K.rq_workers, rq_worker)
  end
  for _, queue in ipairs(queues) do
    if usable(K.rq_workers_by_queue .. queue, 'set') then
      redis.call('SREM', K.rq_workers_by_queue .. queue, rq_worker)
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
