--[[
  Claim up to n jobs for one worker: promote due scheduled jobs, pop job ids from the queues
  in the order given, and mark each claimed job started (rq's running registry, the worker's
  in-flight set, the job hash) under a fresh execution id.

  Claiming does not count an attempt: the worker reports when its handler really starts
  (settle.lua mark_started), so a job that waited in a dead worker's prefetch buffer goes
  back to its queue without using one. The attempt number a run will have is returned.

  A job with an effect key is run only if the key is free; the claim takes the key for this
  execution ('r:<exec>', expiring unless the worker's heartbeat renews it). If the key is
  done ('d<result>'), the job finishes at once as a duplicate with the stored result; if a
  live run holds it, the job is deferred (scheduled again, each time a little later, up to
  30 s) without using an attempt.

  Bounded work: every id the call touches (promoted, popped, claimed, skipped) spends one unit
  of ctx.budget, whatever happens to it; when the budget is spent the call returns and says so.

  Untrusted data: an id that is not 1-128 letters, digits, '-' or '_', or whose job key is not a
  hash, is quarantined (the stream K.quarantine, with the reason), never run; numbers in the job
  hash are read defensively; anything the worker cannot use is reported back and the worker
  dead-letters the job with the reason. A queue whose keys hold garbage is reported and skipped.

  ctx = {worker, token, seq, claim_ttl_ms, defer_s, result_ttl, budget}

  Returns jobs (each {id, exec, attempt, queue, note, <FETCH values>}), duplicates and deferred
  jobs (each {id, queue, job type}), the number of stale ids dropped (no job hash behind them,
  or a job already running or settled), the number quarantined, and whether the budget ran out.
]]

local FETCH = {'data', 'meta', 'origin', 'timeout', 'retry', 'effect_key', 'created_at', 'result_ttl',
  'status', 'attempt', 'lost', 'deferred'}
-- statuses a job may be claimed in; an id met in any other (a stray second copy of an id that
-- is already running or settled) is dropped from the queue and counted as stale
local RUNNABLE = {queued = true, scheduled = true, deferred = true, created = true}
local PROMOTE_MAX = 256
local DEFER_MAX = 30
local MAX_COUNT = 1000000

local spent = 0

local function valid_id(id)
  return #id <= 128 and string.find(id, '^[%w_%-]+$') ~= nil
end

local function quarantine(queue, id, reason)
  if own(K.quarantine, 'stream') then
    redis.call('XADD', K.quarantine, 'MAXLEN', '~', '10000', '*', 'queue', queue, 'id', id,
      'reason', reason, 'at', iso(now()))
  end
end

local function promote_due(ctx, queue)
  local left = math.min(PROMOTE_MAX, ctx.budget - spent)
  if left <= 0 then
    return
  end
  local sk = K.scheduled .. queue
  local due = redis.call('ZRANGEBYSCORE', sk, '-inf', now(), 'LIMIT', 0, left)
  if #due == 0 then
    return
  end
  spent = spent + #due
  local stamp = iso(now())
  for _, id in ipairs(due) do
    local jk = K.job .. id
    if redis.call('EXISTS', jk) == 1 then
      redis.pcall('HSET', jk, 'status', 'queued', 'enqueued_at', stamp) -- garbage: the claim quarantines it
      redis.call('RPUSH', K.queue .. queue, id)
    end
  end
  redis.call('ZREM', sk, unpack(due))
  touch(queue)
end

-- the job type named in a job's data, for metrics; '' if the data is not readable JSON
local function job_type_of(data)
  local ok, decoded = pcall(cjson.decode, data)
  if ok and type(decoded) == 'table' and type(decoded[1]) == 'string' then
    return decoded[1]
  end
  return ''
end

local function defer(ctx, id, queue, times)
  local delay = math.max(ctx.defer_s, math.min(ctx.defer_s * 2 ^ math.min(times, 5), DEFER_MAX))
  redis.call('HSET', K.job .. id, 'status', 'scheduled', 'deferred', times + 1)
  redis.call('ZADD', K.scheduled .. queue, now() + delay, id)
  touch(queue)
end

-- What the effect key says: 'free', 'done' (with the stored value), 'held', or 'garbage'.
local function effect_state(effect_key)
  local held = redis.pcall('GET', K.effect_key .. effect_key)
  if type(held) == 'table' then
    return 'garbage'
  elseif not held then
    return 'free'
  elseif string.sub(held, 1, 1) == 'd' then
    return 'done', held
  end
  return 'held'
end

local function claim(ctx, queues, n)
  local jobs, duplicates, deferred, stale, quarantined = {}, {}, {}, 0, 0
  local seq = ctx.seq
  local open = {}
  for _, queue in ipairs(queues) do
    local qk, sk, wk = K.queue .. queue, K.scheduled .. queue, K.wip .. queue
    open[queue] = usable(qk, 'list') and usable(sk, 'zset') and usable(wk, 'zset')
    if open[queue] then
      promote_due(ctx, queue)
    end
  end
  local inflight = inflight_key(ctx.worker)
  local inflight_ok = usable(inflight, 'set')
  for _, queue in ipairs(queues) do
    local qk = K.queue .. queue
    while open[queue] and #jobs < n and spent < ctx.budget do
      local id = redis.call('LPOP', qk)
      if not id then
        break
      end
      spent = spent + 1
      local jk = K.job .. id
      local f = valid_id(id) and redis.pcall('HMGET', jk, unpack(FETCH))
      if not f then
        quarantine(queue, id, 'the job id is not 1-128 letters, digits, - or _')
        quarantined = quarantined + 1
      elseif f.err then
        quarantine(queue, id, 'the job key is not a hash')
        quarantined = quarantined + 1
      elseif (not f[1] and redis.call('EXISTS', jk) == 0) or (f[9] and not RUNNABLE[f[9]]) then
        stale = stale + 1
      else
        local state, stored, note = 'free', nil, ''
        if f[6] then
          state, stored = effect_state(f[6])
          if state == 'garbage' then
            state, note = 'free', 'its idempotency key holds something else than a chumon marker'
          end
        end
        if state == 'done' then
          local ttl = whole(f[8], -1, 31536000) or ctx.result_ttl
          finish(id, queue, string.sub(stored, 2), ttl, '', ctx.worker)
          duplicates[#duplicates + 1] = {id, queue, job_type_of(f[1])}
        elseif state == 'held' then
          defer(ctx, id, queue, whole(f[12], 0, MAX_COUNT) or 0)
          deferred[#deferred + 1] = {id, queue, job_type_of(f[1])}
        else
          seq = seq + 1
          local exec = ctx.token .. '.' .. seq
          if f[6] and note == '' then
            redis.call('SET', K.effect_key .. f[6], 'r:' .. exec, 'PX', ctx.claim_ttl_ms)
          end
          redis.call('HSET', jk, 'status', 'started', 'worker_name', ctx.worker, 'execution', exec,
            'last_heartbeat', iso(now()))
          redis.call('ZADD', K.wip .. queue, '+inf', id .. ':' .. exec)
          if inflight_ok then
            redis.call('SADD', inflight, id .. ':' .. exec)
          end
          local job = {id, exec, (whole(f[10], 0, MAX_COUNT) or 0) + 1, queue, note}
          for i = 1, #FETCH do
            job[#job + 1] = f[i] or ''
          end
          jobs[#jobs + 1] = job
        end
      end
    end
    if #jobs >= n or spent >= ctx.budget then
      break
    end
  end
  return jobs, duplicates, deferred, stale, quarantined, spent >= ctx.budget
end

-- The earliest due time among the queues' scheduled jobs, or -1.
local function next_due(queues)
  local best = -1
  for _, queue in ipairs(queues) do
    local sk = K.scheduled .. queue
    if usable(sk, 'zset') then
      local first = redis.call('ZRANGE', sk, 0, 0, 'WITHSCORES')
      if first[2] then
        local at = tonumber(first[2])
        if best < 0 or at < best then
          best = at
        end
      end
    end
  end
  return best
end
