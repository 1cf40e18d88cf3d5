--[[
  Settle an attempt: complete, fail (retry or dead-letter) or release it.

  Every function first checks that execution `exec` still owns job `id` (the job hash's
  `execution` field): a run whose job was recovered from it, or already settled, changes
  nothing and is reported as lost. Settling clears `execution`, so a job is settled once.

  ctx = {now, now_iso, worker (the worker whose in-flight set holds the run),
         dlq_retention, dlq_max_length}
]]

local function take(ctx, id, exec, queue)
  local jk = K.job .. id
  local owner = redis.call('HMGET', jk, 'execution', 'effect_key')
  if owner[1] ~= exec then
    return nil
  end
  redis.call('ZREM', K.wip .. queue, id .. ':' .. exec)
  redis.call('SREM', inflight_key(ctx.worker), id .. ':' .. exec)
  redis.call('HDEL', jk, 'execution')
  return owner[2] or ''
end

local function release_claim(effect_key, exec)
  if effect_key ~= '' then
    local key = K.effect_key .. effect_key
    if redis.call('GET', key) == 'r:' .. exec then
      redis.call('DEL', key)
    end
  end
end

local function add_result(ctx, id, ttl, fields)
  local rk = K.results .. id
  redis.call('XADD', rk, 'MAXLEN', '10', '*', 'worker_name', ctx.worker, unpack(fields))
  if ttl < 0 then
    redis.call('PERSIST', rk)
  else
    redis.call('EXPIRE', rk, ttl)
  end
end

-- finish as successful; result_b64 '' means no return value
local function finish(ctx, id, queue, result_b64, ttl, exec)
  local jk = K.job .. id
  if ttl == 0 then
    redis.call('DEL', jk, K.results .. id)
    return
  end
  redis.call('HSET', jk, 'status', 'finished', 'ended_at', ctx.now_iso)
  if ttl < 0 then
    redis.call('PERSIST', jk)
    redis.call('ZADD', K.finished .. queue, '+inf', id)
  else
    redis.call('EXPIRE', jk, ttl)
    redis.call('ZADD', K.finished .. queue, ctx.now + ttl, id)
  end
  if result_b64 ~= '' then
    add_result(ctx, id, ttl, {'type', '1', 'return_value', result_b64, 'execution_id', exec})
  end
end

-- item = {id, exec, queue, result_b64, result_ttl, effect_ttl}
local function complete(ctx, item)
  local id, exec, queue = item[1], item[2], item[3]
  local effect_key = take(ctx, id, exec, queue)
  if not effect_key then
    return false
  end
  if effect_key ~= '' then
    redis.call('SET', K.effect_key .. effect_key, 'd' .. item[4], 'EX', item[6])
  end
  finish(ctx, id, queue, item[4], item[5], exec)
  return true
end

-- Move a job to its queue's dead-letter queue (a real rq queue no worker serves) and to rq's
-- failed registry of its origin queue. Returns how many old dead letters the length cap removed.
local function dead_letter(ctx, id, queue)
  local jk = K.job .. id
  local dlq = queue .. K.dlq_suffix
  redis.call('HSET', jk, 'status', 'failed', 'ended_at', ctx.now_iso, 'dead_lettered_at', ctx.now_iso)
  redis.call('PERSIST', jk)
  redis.call('RPUSH', K.queue .. dlq, id)
  redis.call('SADD', K.queues, K.queue .. dlq)
  redis.call('ZADD', K.failed .. queue, ctx.now + ctx.dlq_retention, id)
  local dropped = 0
  local over = redis.call('LLEN', K.queue .. dlq) - ctx.dlq_max_length
  while over > 0 do
    local old = redis.call('LPOP', K.queue .. dlq)
    redis.call('ZREM', K.failed .. queue, old)
    redis.call('DEL', K.job .. old, K.results .. old)
    dropped = dropped + 1
    over = over - 1
  end
  if dropped > 0 then
    redis.call('HINCRBY', K.dlq_dropped, queue, dropped)
  end
  return dropped
end

-- item = {id, exec, queue, action ('retry' | 'dead'), run_at, meta_json, exc_b64, hook_job or absent}
-- Returns false if the run no longer owned the job, else the count of dead letters the cap dropped.
local function fail(ctx, item)
  local id, exec, queue, action = item[1], item[2], item[3], item[4]
  local effect_key = take(ctx, id, exec, queue)
  if not effect_key then
    return false
  end
  release_claim(effect_key, exec)
  local jk = K.job .. id
  redis.call('HSET', jk, 'meta', item[6], 'ended_at', ctx.now_iso)
  add_result(ctx, id, ctx.dlq_retention, {'type', '2', 'exc_string', item[7], 'execution_id', exec})
  if action == 'retry' then
    local run_at = item[5]
    if run_at > ctx.now then
      redis.call('HSET', jk, 'status', 'scheduled')
      redis.call('ZADD', K.scheduled .. queue, run_at, id)
      touch(queue)
    else
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', ctx.now_iso)
      push(queue, id, false)
    end
    return 0
  end
  local dropped = dead_letter(ctx, id, queue)
  if item[8] then
    enqueue_job(item[8], ctx.now)
  end
  return dropped
end

-- Hand an attempt back to the head of its queue without counting it (shutdown, unstarted work).
-- item = {id, exec, queue}
local function release(ctx, item)
  local id, exec, queue = item[1], item[2], item[3]
  local effect_key = take(ctx, id, exec, queue)
  if not effect_key then
    return false
  end
  release_claim(effect_key, exec)
  local jk = K.job .. id
  redis.call('HINCRBY', jk, 'attempt', -1)
  redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', ctx.now_iso)
  push(queue, id, true)
  return true
end
