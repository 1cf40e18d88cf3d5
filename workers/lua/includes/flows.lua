--[[
  Flows: a parent job waits, deferred, until its children have ended (workers/flows.py).

  Keys of a parent P (written by flow.lua when the flow is created):
    K.flow .. P .. ':children'  list of P's children ids, in the order they were given
    K.flow .. P .. ':pending'   set of the children that have not ended yet
    K.flow .. P .. ':results'   hash: child id -> 'd<result_b64>' (finished), 'f' (dead-lettered),
                                'c' (canceled); the latest outcome of each child
  P's job hash has status 'deferred' and `flow` = '1', and P is in rq's deferred registry of its
  queue; a child's job hash has `flow_parent` (P) and `flow_policy` ('fail_parent' or 'ignore').

  flow_settled(id, queue, how, result_b64, ttl) is called by every path that ends a job for good
  (settle.lua: finish, dead_letter, mark_canceled; control.lua: cancel), `how` being 'done',
  'dead' or 'canceled', `ttl` how long the job itself is kept (-1 for ever, 0 not at all):
    - a child's outcome goes into its parent's results; the first time it ends, it leaves
      `pending`, and the parent is released to its queue when `pending` is empty. A child
      dead-lettered or canceled under 'fail_parent' releases the parent at once, marked
      (meta.flow_failed) so that the worker dead-letters it with the reason instead of running it;
      under 'ignore' it counts as ended, and the parent runs and sees the failure.
    - a parent's own flow keys expire with it, and it leaves rq's deferred registry.
  A parent canceled while it waited is not released. Nothing here raises: a key holding garbage
  is reported (usable) and left alone.

  Needs includes/common.lua before it; include it before includes/settle.lua.
]]

local FLOW_KEYS = {':children', ':pending', ':results'}
-- id -> {flow_parent, flow_policy, flow} of jobs whose fields settle.lua's owner_of read already, so
-- the hot path spends no command of its own on flows
local flow_seen = {}
on_call(function() flow_seen = {} end)
local NOT_IN_A_FLOW = {} -- flow_seen's entry for a job in no flow: no table built per job

-- The parent's flow keys live as long as the parent's job: ttl s, for ever (-1), or not at all (0).
-- Whether the call declared what telling flow parent `parent` that a child ended touches
-- (flow_settled): its job hash and flow records, and its queue's line and deferred registry (its
-- origin, read here). Always true for a call that declares no keys (includes/common.lua declared()).
local function may_tell_parent(parent)
  if not (declared(K.job .. parent) and declared(K.flow .. parent .. ':pending')) then
    return false
  end
  local origin = redis.pcall('HGET', K.job .. parent, 'origin')
  return type(origin) ~= 'string' or (declared(K.queue .. origin) and declared(K.deferred .. origin))
end

local function flow_expire(id, queue, ttl)
  if usable(K.deferred .. queue, 'zset') then
    redis.call('ZREM', K.deferred .. queue, id)
  end
  for _, suffix in ipairs(FLOW_KEYS) do
    local key = K.flow .. id .. suffix
    if ttl == 0 then
      redis.call('DEL', key)
    elseif ttl < 0 then
      redis.call('PERSIST', key)
    else
      redis.call('EXPIRE', key, ttl)
    end
  end
end

-- Put a waiting parent on its queue; with `failure`, marked to be dead-lettered for that reason.
local function flow_release(parent, failure)
  local jk = K.job .. parent
  local f = redis.pcall('HMGET', jk, 'status', 'origin')
  if type(f) ~= 'table' or f.err or not f[2] then
    return
  end
  local queue = f[2]
  if f[1] ~= 'deferred' or not (usable(K.queue .. queue, 'list') and usable(K.prioritized .. queue, 'zset')
      and usable(K.deferred .. queue, 'zset')) then
    return -- canceled while it waited (or its queue holds garbage, reported): left as it is
  end
  redis.call('ZREM', K.deferred .. queue, parent)
  if failure then
    redis.call('HSET', jk, 'meta', cjson.encode({flow_failed = failure, state = 'a child failed'}))
  end
  redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_iso())
  requeue(queue, parent, false)
end

local function flow_settled(id, queue, how, result_b64, ttl)
  local f = flow_seen[id] or redis.pcall('HMGET', K.job .. id, 'flow_parent', 'flow_policy', 'flow')
  if type(f) ~= 'table' or f.err then
    return
  end
  if f[3] then
    flow_expire(id, queue, ttl)
  end
  local parent = f[1]
  if not parent then
    return
  end
  local base = K.flow .. parent
  local life = redis.call('PTTL', base .. ':children')
  if life == -2 then
    return -- the parent's flow is gone (it ended and expired)
  end
  local results = base .. ':results'
  if usable(results, 'hash') then
    local value = how == 'done' and ('d' .. result_b64) or (how == 'dead' and 'f' or 'c')
    redis.call('HSET', results, id, value)
    if life > 0 then
      redis.call('PEXPIRE', results, life)
    end
  end
  local pending = base .. ':pending'
  if not usable(pending, 'set') or redis.call('SREM', pending, id) == 0 then
    return -- it had ended before (a requeued dead letter that ran again): the parent has moved on
  end
  if how ~= 'done' and f[2] ~= 'ignore' then
    redis.call('DEL', pending)
    flow_release(parent, 'child ' .. id .. ' was ' .. (how == 'dead' and 'dead-lettered' or 'canceled'))
  elseif redis.call('SCARD', pending) == 0 then
    flow_release(parent, nil)
  end
end
