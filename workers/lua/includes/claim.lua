--[[
  Claim up to n jobs for one worker: promote due scheduled jobs, pop job ids from the queues
  in the order given, and mark each claimed job started (rq's started registry, the worker's
  in-flight set, the job hash) under a fresh execution id.

  A job with an effect key is run only if the key is free; the claim takes the key for this
  execution ('r:<exec>', expiring unless the worker's heartbeat renews it). If the key is
  done ('d<result>'), the job finishes at once as a duplicate with the stored result; if a
  live run holds it, the job is deferred (scheduled again) without using an attempt.

  ctx = {now, now_iso, worker, token, seq, claim_ttl_ms, defer_s, result_ttl}

  Returns jobs (each {id, exec, attempt, queue, <FETCH_FIELDS of workers/codec.py>}),
  duplicates and deferred jobs (each {id, queue, job type}), and the number of stale ids
  dropped (no job hash behind them, or a job already running or settled).
]]

local FETCH = {'data', 'meta', 'origin', 'timeout', 'retry', 'effect_key', 'created_at', 'result_ttl', 'status'}
-- statuses a job may be claimed in; an id met in any other (a stray second copy of an id that
-- is already running or settled) is dropped from the queue and counted as stale
local RUNNABLE = {queued = true, scheduled = true, deferred = true, created = true}

local function promote_due(ctx, queue)
  local sk = K.scheduled .. queue
  local due = redis.call('ZRANGEBYSCORE', sk, '-inf', ctx.now, 'LIMIT', 0, 500)
  if #due == 0 then
    return
  end
  for _, id in ipairs(due) do
    local jk = K.job .. id
    if redis.call('EXISTS', jk) == 1 then
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', ctx.now_iso)
      redis.call('RPUSH', K.queue .. queue, id)
    end
  end
  redis.call('ZREM', sk, unpack(due))
  redis.call('SADD', K.queues, K.queue .. queue)
end

-- the job type named in a job's data, for metrics; '' if the data is not readable JSON
local function job_type_of(data)
  local ok, decoded = pcall(cjson.decode, data)
  if ok and type(decoded) == 'table' and type(decoded[1]) == 'string' then
    return decoded[1]
  end
  return ''
end

local function finish_duplicate(ctx, id, queue, stored, ttl_field)
  local ttl = ctx.result_ttl
  if ttl_field then
    ttl = tonumber(ttl_field)
  end
  finish(ctx, id, queue, string.sub(stored, 2), ttl, '')
end

local function defer(ctx, id, queue)
  redis.call('HSET', K.job .. id, 'status', 'scheduled')
  redis.call('HINCRBY', K.job .. id, 'deferred', 1)
  redis.call('ZADD', K.scheduled .. queue, ctx.now + ctx.defer_s, id)
  touch(queue)
end

local function claim(ctx, queues, n)
  local jobs, duplicates, deferred, orphans = {}, {}, {}, 0
  local seq = ctx.seq
  for _, queue in ipairs(queues) do
    promote_due(ctx, queue)
  end
  local inflight = inflight_key(ctx.worker)
  for _, queue in ipairs(queues) do
    local qk = K.queue .. queue
    while #jobs < n do
      local id = redis.call('LPOP', qk)
      if not id then
        break
      end
      local jk = K.job .. id
      local f = redis.pcall('HMGET', jk, unpack(FETCH))
      local run = true
      if f.err then
        -- the id names a key that is not a job hash: there is no job to run or dead-letter
        orphans = orphans + 1
        run = false
      elseif not f[1] and redis.call('EXISTS', jk) == 0 then
        orphans = orphans + 1
        run = false
      elseif f[9] and not RUNNABLE[f[9]] then
        orphans = orphans + 1
        run = false
      elseif f[6] then
        local held = redis.call('GET', K.effect_key .. f[6])
        if held then
          run = false
          if string.sub(held, 1, 1) == 'd' then
            finish_duplicate(ctx, id, queue, held, f[8])
            duplicates[#duplicates + 1] = {id, queue, job_type_of(f[1])}
          else
            defer(ctx, id, queue)
            deferred[#deferred + 1] = {id, queue, job_type_of(f[1])}
          end
        end
      end
      if run then
        seq = seq + 1
        local exec = ctx.token .. '.' .. seq
        if f[6] then
          redis.call('SET', K.effect_key .. f[6], 'r:' .. exec, 'PX', ctx.claim_ttl_ms)
        end
        local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
        redis.call('HSET', jk, 'status', 'started', 'started_at', ctx.now_iso, 'worker_name', ctx.worker,
          'execution', exec, 'last_heartbeat', ctx.now_iso)
        redis.call('ZADD', K.wip .. queue, '+inf', id .. ':' .. exec)
        redis.call('SADD', inflight, id .. ':' .. exec)
        local job = {id, exec, attempt, queue}
        for i = 1, #FETCH do
          job[#job + 1] = f[i] or ''
        end
        jobs[#jobs + 1] = job
      end
    end
    if #jobs >= n then
      break
    end
  end
  return jobs, duplicates, deferred, orphans
end

-- The earliest due time among the queues' scheduled jobs, or -1.
local function next_due(queues)
  local best = -1
  for _, queue in ipairs(queues) do
    local first = redis.call('ZRANGE', K.scheduled .. queue, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if best < 0 or at < best then
        best = at
      end
    end
  end
  return best
end
