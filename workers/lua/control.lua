--[[
  control: an operator's action on one job, whatever state it is in. Idempotent.

  cancel  a queued, prioritized, scheduled or deferred job leaves its queue and ends canceled
          (rq's canceled registry, kept `ttl` seconds); a running one is asked to stop: its id
          joins K.cancel, which its worker's heartbeat reads, and the job sees `ctx.cancelled`;
          it ends canceled if it raises Cancelled, or as it would have otherwise
  a finished, failed or canceled job is left as it is
  a flow's child that is canceled counts as failed for its parent; a flow's parent waiting for its
  children (deferred) is canceled and will not run (includes/flows.lua)

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {action = 'cancel', id, ttl, events, origin, parent, parent_origin}
             origin, parent, parent_origin: the job's queue, its flow parent and the parent's
             queue as the caller read them ('' for none)
  KEYS: every key it may touch for those (workers/keys.py cancel_keys)

  Output:
    {status before, what was done}: what is 'removed', 'asked' (running), 'nothing' or 'missing',
    or 'changed' (nothing done) when the job's queue or parent is not what the caller read

  Events:
    none
]]
--- @include "common"
--- @include "flows"

local plan = cjson.decode(ARGV[2])
local id = plan.id
local jk = K.job .. id
local f = redis.pcall('HMGET', jk, 'status', 'origin', 'flow_parent')
if type(f) ~= 'table' or f.err or not f[1] then
  return {'', 'missing'}
end
local status, queue = f[1], f[2] or ''
-- the keys declared are those of the queue and parent the caller read: are they still the job's?
local parent = f[3] or ''
if queue ~= plan.origin or parent ~= plan.parent then
  return {status, 'changed'}
end
if parent ~= '' then
  local pf = redis.pcall('HGET', K.job .. parent, 'origin')
  if (type(pf) == 'string' and pf or '') ~= plan.parent_origin then
    return {status, 'changed'}
  end
end
if status == 'started' then
  redis.call('SADD', K.cancel, id)
  return {status, 'asked'}
end
if status ~= 'queued' and status ~= 'scheduled' and status ~= 'deferred' and status ~= 'created' then
  return {status, 'nothing'}
end
local removed = 0
if usable(K.queue .. queue, 'list') then
  removed = removed + redis.call('LREM', K.queue .. queue, 0, id)
end
for _, key in ipairs({K.prioritized .. queue, K.scheduled .. queue}) do
  if usable(key, 'zset') then
    removed = removed + redis.call('ZREM', key, id)
  end
end
redis.call('HSET', jk, 'status', 'canceled', 'ended_at', now_iso())
redis.call('EXPIRE', jk, plan.ttl)
if usable(K.canceled .. queue, 'zset') then
  redis.call('ZADD', K.canceled .. queue, now() + plan.ttl, id)
end
flow_settled(id, queue, 'canceled', '', plan.ttl) -- flows: a child tells its parent; a parent stops waiting
emit(plan.events, 'canceled', id, queue)
return {status, 'removed'}
