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

  Declared keys: a job is claimed, promoted or finished as a duplicate only if the call declared
  its keys (its hash, its effect key and result, its type's throttle and limiter, a duplicate's flow
  records): the caller read them just before (workers/stepkeys.py). Meeting an id it was not told
  of, the claim puts it and the rest of what it popped back where they were (a prioritized job
  with its score), in order, and ends (`missed`); an id it needs more of goes back too and is
  returned in `wanted`. Due jobs are promoted up to the first one not declared.

  Untrusted data: an id that is not 1-128 letters, digits, '-' or '_', or whose job key is not a
  hash, is quarantined (the stream K.quarantine, with the reason), never run; numbers in the job
  hash are read defensively; anything the worker cannot use is reported back and the worker
  dead-letters the job with the reason. A queue whose keys hold garbage is reported and skipped.

  Which queues give work: a paused queue (K.paused) gives none; nor does a throttled one (a job
  said the other side asked to slow down: K.throttle), nor one whose rate limit is used up for
  its window (K.limiter, a fixed window per limit, counted here as jobs start). A queue's
  jobs without a priority (its rq list) come first, then its prioritized jobs (K.prioritized,
  lowest priority number first, FIFO among equals): the common case costs nothing more. A job
  whose type is rate-limited or throttled waits in the scheduled registry until its window
  ends, without using an attempt. `limited_until` says when the earliest limit lifts.

  ctx = {worker, token, seq, claim_ttl_ms, defer_s, result_ttl, budget,
         limits = {queue = {max, ms}}, type_limits = {type = {max, ms}}}

  Returns jobs (each {id, exec, attempt, queue, note, data, meta, timeout, retry, effect_key,
  result_ttl, stored attempt, job_type, flow parent, flow}), duplicates and deferred
  jobs (each {id, queue, job type}), the number of stale ids dropped (no job hash behind them,
  or a job already running or settled), the number quarantined, whether the budget ran out or
  the claim met an id it was not told of,
  and the server time when the earliest limit or throttle lifts (-1: none held a queue back).
]]

-- the fields the claim reads of each job, in this order (claim() uses them by position); the row a
-- claimed job returns carries those the worker needs (workers/execution.py Claimed.from_row)
local FETCH = {'data', 'meta', 'timeout', 'retry', 'effect_key', 'result_ttl', 'status', 'attempt',
  'deferred', 'job_type', 'flow_parent', 'flow'}
-- statuses a job may be claimed in; an id met in any other (a stray second copy of an id that
-- is already running or settled) is dropped from the queue and counted as stale
local RUNNABLE = {queued = true, scheduled = true, deferred = true, created = true}
local PROMOTE_MAX = 256
local MAX_PRIORITY = 2097152 -- 2^21, as BullMQ: with a 2^32 sequence, scores stay exact below 2^53
local DEFER_MAX = 30
local MAX_COUNT = 1000000

local spent = 0
local wanted, missed = {}, false
on_call(function() spent, wanted, missed = 0, {}, false end)

local function valid_id(id)
  return #id <= 128 and string.find(id, '^[%w_%-]+$') ~= nil
end

local function quarantine(queue, id, reason)
  if own(K.quarantine, 'stream') then
    redis.call('XADD', K.quarantine, 'MAXLEN', '~', '10000', '*', 'queue', queue, 'id', id,
      'reason', reason, 'at', now_iso())
  end
end

local function promote_due(ctx, queue)
  local left = math.min(PROMOTE_MAX, ctx.budget - spent)
  if left <= 0 then
    return
  end
  local keys = keys_of(queue)
  local sk = keys[2]
  local due = redis.call('ZRANGEBYSCORE', sk, '-inf', now(), 'LIMIT', 0, left)
  if #due == 0 or not (usable(keys[1], 'list') and usable(keys[5], 'zset')) then
    return -- nothing due, or where it would go holds garbage (reported): it stays scheduled
  end
  local stamp = now_iso()
  local promoted = {}
  for _, id in ipairs(due) do
    local jk = K.job .. id
    if not declared(jk) then
      missed = true -- due since the caller read the registry: the next call promotes it
      break
    end
    promoted[#promoted + 1] = id
    local f = redis.pcall('HMGET', jk, 'status', 'priority')
    if type(f) ~= 'table' or f.err then
      redis.call('RPUSH', K.queue .. queue, id) -- not a hash: the claim quarantines it
    elseif f[1] then
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', stamp)
      local priority = whole(f[2], 1, MAX_PRIORITY)
      if priority then
        redis.call('ZADD', K.prioritized .. queue, priority_score(queue, priority, false), id)
      else
        redis.call('RPUSH', K.queue .. queue, id)
      end
    end
  end
  if #promoted > 0 then
    spent = spent + #promoted
    redis.call('ZREM', sk, unpack(promoted))
    touch(queue)
  end
end

-- Put the popped ids from `from` on back where they were, in order (`scores`: they came from the
-- prioritized set): the call was not told their keys (includes/common.lua declared()).
local function put_back(queue, popped, scores, from)
  if from > #popped then
    return
  end
  if scores then
    for i = from, #popped do
      redis.call('ZADD', K.prioritized .. queue, scores[i], popped[i])
    end
  else
    local ids = {}
    for i = #popped, from, -1 do
      ids[#ids + 1] = popped[i]
    end
    redis.call('LPUSH', K.queue .. queue, unpack(ids))
  end
end

-- Whether a job found done may finish as a duplicate here: its result's key was declared and, if
-- it is in a flow, what telling its flow touches (its own flow records, its parent's and the
-- parent's queue).
local function may_finish_duplicate(id, queue, parent, is_parent)
  if not declared(K.results .. id) then
    return false
  end
  if is_parent and not (declared(K.flow .. id .. ':children') and declared(K.deferred .. queue)) then
    return false
  end
  return not parent or may_tell_parent(parent)
end

-- the job type named in a job's data, for metrics; '' if the data is not readable JSON
local function job_type_of(data)
  local ok, decoded = pcall(cjson.decode, data)
  if ok and type(decoded) == 'table' and type(decoded[1]) == 'string' then
    return decoded[1]
  end
  return ''
end

-- A job whose type may not start now (rate limit, throttle): it waits `ms`, using no attempt.
local function hold_back(id, queue, ms)
  redis.call('HSET', K.job .. id, 'status', 'scheduled')
  redis.call('ZADD', K.scheduled .. queue, now() + ms / 1000, id)
  touch(queue)
end

-- How many jobs a rate limit still allows in its window, and when the window ends (ms from now).
local function allowance(kind, name, limit)
  local throttled = redis.call('PTTL', K.throttle .. kind .. ':' .. name)
  if throttled > 0 then
    return 0, throttled
  end
  if not limit then
    return nil, 0
  end
  local key = K.limiter .. kind .. ':' .. name
  local used = whole(redis.pcall('GET', key), 0, 1e12) or 0
  local left = limit.max - used
  if left > 0 then
    return left, 0
  end
  local ttl = redis.call('PTTL', key)
  return 0, ttl > 0 and ttl or limit.ms
end

-- Count `count` jobs started against a limit's window (the window opens with its first job).
local function spend(kind, name, limit, count)
  if limit and count > 0 then
    local key = K.limiter .. kind .. ':' .. name
    if type(redis.pcall('SET', key, 0, 'PX', limit.ms, 'NX')) == 'table' then
      redis.call('DEL', key) -- garbage in its place
      redis.call('SET', key, 0, 'PX', limit.ms)
    end
    redis.call('INCRBY', key, count)
  end
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
  local open, paused, limited_until = {}, {}, -1
  local limits, type_limits = ctx.limits or {}, ctx.type_limits or {}
  local type_left, type_used = {}, {}
  for _, name in ipairs(try('set', 'SMEMBERS', K.paused) or {}) do
    paused[name] = true
  end
  local function lifts_in(ms)
    local at = now() + ms / 1000
    if limited_until < 0 or at < limited_until then
      limited_until = at
    end
  end
  for _, queue in ipairs(queues) do
    local keys = keys_of(queue)
    -- checked before anything is popped: a claimed job goes to the running registry, one held
    -- back or deferred to the scheduled one (the list and the prioritized set are popped under
    -- try(): one holding garbage gives nothing)
    open[queue] = not paused[queue] and usable(keys[2], 'zset') and usable(keys[3], 'zset')
    if open[queue] then
      promote_due(ctx, queue)
    end
  end
  local inflight = inflight_key(ctx.worker)
  for _, queue in ipairs(queues) do
    local keys = keys_of(queue)
    local qk, wk, pk = keys[1], keys[3], keys[5]
    local left, wait = nil, 0
    if open[queue] then
      left, wait = allowance('queue', queue, limits[queue])
      if wait > 0 then
        lifts_in(wait)
      end
    end
    local started = 0
    local popped, at = {}, 1 -- ids taken off the queue in one command, looked at one by one
    local scores -- the popped ids' scores, when they came from the prioritized set
    local stopped = false
    -- an id whose keys the call was not told (declared()): it and the rest popped go back, and the
    -- claim ends; `more`: its id is one the caller must read more of (else the head moved on)
    local function stop_at(id, more)
      put_back(queue, popped, scores, at - 1)
      spent = spent - 1
      at = #popped + 1
      if more then
        wanted[#wanted + 1] = id
      end
      missed, stopped = true, true
    end
    while not stopped and (at <= #popped
      or (open[queue] and #jobs < n and spent < ctx.budget and (left == nil or started < left))) do
      if at > #popped then
        -- as many as the call may still claim: every one popped is looked at below
        local want = math.min(n - #jobs, ctx.budget - spent, left and (left - started) or n)
        popped, at, scores = try('list', 'LPOP', qk, want) or {}, 1, nil
        if #popped == 0 then
          local first = try('zset', 'ZPOPMIN', pk, want) or {}
          scores = {}
          for i = 1, #first, 2 do
            popped[#popped + 1] = first[i]
            scores[#scores + 1] = first[i + 1]
          end
          if #popped == 0 then
            break
          end
        end
      end
      local id = popped[at]
      at = at + 1
      spent = spent + 1
      local jk = K.job .. id
      local valid = valid_id(id)
      local f = valid and declared(jk) and redis.pcall('HMGET', jk, unpack(FETCH))
      if valid and not f then
        stop_at(id, false)
      elseif not f then
        quarantine(queue, id, 'the job id is not 1-128 letters, digits, - or _')
        quarantined = quarantined + 1
      elseif f.err then
        quarantine(queue, id, 'the job key is not a hash')
        quarantined = quarantined + 1
      elseif (not f[1] and redis.call('EXISTS', jk) == 0) or (f[7] and not RUNNABLE[f[7]]) then
        stale = stale + 1
      else
        local state, stored, note = 'free', nil, ''
        local job_type = f[10] or ''
        if next(type_limits) ~= nil or job_type == '' then
          job_type = job_type ~= '' and job_type or job_type_of(f[1])
        end
        if (job_type ~= '' and not declared(K.throttle .. 'type:' .. job_type))
            or (type_limits[job_type] and not declared(K.limiter .. 'type:' .. job_type))
            or (f[5] and not declared(K.effect_key .. f[5])) then
          stop_at(id, true)
        else
          if job_type ~= '' and type_used[job_type] == nil then -- once per type and call (its allowance may be nil)
            local type_wait
            type_left[job_type], type_wait = allowance('type', job_type, type_limits[job_type])
            type_used[job_type] = 0
            if type_wait > 0 then
              type_left[job_type] = -type_wait -- negative: held back this many ms
            end
          end
          local tl = type_left[job_type]
          if tl ~= nil and tl <= 0 then
            local ms = tl < 0 and -tl or (type_limits[job_type] and type_limits[job_type].ms or 1000)
            hold_back(id, queue, ms)
            lifts_in(ms)
            deferred[#deferred + 1] = {id, queue, job_type}
          else
            if f[5] then
              state, stored = effect_state(f[5])
              if state == 'garbage' then
                state, note = 'free', 'its idempotency key holds something else than a chumon marker'
              end
            end
            if state == 'done' and not may_finish_duplicate(id, queue, f[11], f[12]) then
              stop_at(id, true)
            elseif state == 'done' then
              local ttl = whole(f[6], -1, 31536000) or ctx.result_ttl
              finish(id, queue, string.sub(stored, 2), ttl, '', ctx.worker)
              duplicates[#duplicates + 1] = {id, queue, job_type}
              if ctx.events then emit(ctx.events, 'completed', id, queue, {'duplicate', 1}) end
            elseif state == 'held' then
              defer(ctx, id, queue, whole(f[9], 0, MAX_COUNT) or 0)
              deferred[#deferred + 1] = {id, queue, job_type}
            else
              seq = seq + 1
              started = started + 1
              if tl ~= nil then
                type_left[job_type] = tl - 1
                type_used[job_type] = type_used[job_type] + 1
              end
              local exec = ctx.token .. '.' .. seq
              if f[5] and note == '' then
                redis.call('SET', K.effect_key .. f[5], 'r:' .. exec, 'PX', ctx.claim_ttl_ms)
              end
              redis.call('HSET', jk, 'status', 'started', 'worker_name', ctx.worker, 'execution', exec,
                'last_heartbeat', now_iso())
              local run = id .. ':' .. exec
              gather('ZADD', wk, '+inf', run)
              gather('SADD', inflight, run)
              -- one table of its final size: {id, exec, attempt, queue, note, data, meta, timeout, retry,
              -- effect_key, result_ttl, stored attempt, job_type, flow parent, flow}
              local job = {id, exec, (whole(f[8], 0, MAX_COUNT) or 0) + 1, queue, note, f[1] or '', f[2] or '',
                f[3] or '', f[4] or '', f[5] or '', f[6] or '', f[8] or '', f[10] or '', f[11] or '', f[12] or ''}
              if ctx.events then -- no table built per job while events are off
                emit(ctx.events, 'active', id, queue, {'attempt', job[3], 'worker', ctx.worker})
              end
              jobs[#jobs + 1] = job
            end
          end
        end
      end
    end
    spend('queue', queue, limits[queue], started)
    if left ~= nil and started >= left then
      local _, wait_after = allowance('queue', queue, limits[queue])
      if wait_after > 0 then
        lifts_in(wait_after)
      end
    end
    if #jobs >= n or spent >= ctx.budget or stopped then
      break
    end
  end
  for job_type, used in pairs(type_used) do
    spend('type', job_type, type_limits[job_type], used)
  end
  return jobs, duplicates, deferred, stale, quarantined, spent >= ctx.budget or missed, limited_until
end

-- The earliest due time among the queues' scheduled jobs, or -1.
local function next_due(queues)
  local best = -1
  for _, queue in ipairs(queues) do
    local first = try('zset', 'ZRANGE', keys_of(queue)[2], 0, 0, 'WITHSCORES')
    if first then
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
