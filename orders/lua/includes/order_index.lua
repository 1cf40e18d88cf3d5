--[[
  order_index: which jobs carry an order's commands, so `chumon trace` and the dashboard's
  order page find them without scanning every job hash (orders/trace.py).

  index_jobs(key, jobs, ttl): adds each job's id to the set `key` (the order's job index,
  OrderKeys.order_jobs, declared in the script's KEYS) and keeps it `ttl` seconds after its last addition (the longest a job of the order is kept:
  the dead-letter retention). A key holding something else is left alone (usable reports it):
  the trace then misses those jobs, the order itself is unaffected.

  Needs includes/common.lua (usable) before it.
]]
local function index_jobs(key, jobs, ttl)
  if #jobs == 0 or not ttl then
    return
  end
  if not usable(key, 'set') then
    return
  end
  local ids = {}
  for i, job in ipairs(jobs) do
    ids[i] = job.id
  end
  redis.call('SADD', key, unpack(ids))
  redis.call('EXPIRE', key, math.max(1, ttl))
end
