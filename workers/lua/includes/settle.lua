--[[
  Settle an attempt: mark it started, complete it, fail it (retry or dead-letter) or release it.

  Every function first checks that execution `exec` still owns job `id` (the job hash's
  `execution` field): a run whose job was recovered from it, or already settled, changes
  nothing and is reported as lost. Settling clears `execution`, so a job is settled once.
  Each function checks every key it will write before its first write, so an item is applied
  whole or not at all: a key holding hand-written garbage makes the item 'held' (nothing
  written, reported in `problems`); the worker keeps it and tries again later.

  Needs includes/effects.lua before it (check_effects, apply_effects) and includes/flows.lua
  (flow_settled: every job that ends tells its flow parent, if it has one).

  Times come from the server's clock (now()); the worker sends durations and the times its
  handler really started and ended (for display).

  ctx = {worker (the worker whose in-flight set holds the runs, unless an item names another),
         dlq_retention, dlq_max_length}
]]

local MAX_TTL = 31536000 -- a year: workers/options.py MAX_TTL
-- CHUMON_RESULT_STORE=hash (step.lua sets it from ctx): a return value goes to the job hash's
-- return_value field instead of rq's result stream (about 4.7 KB of Redis memory each)
local results_in_hash = false
on_call(function() results_in_hash = false end)
local CAP_PER_CALL = 100 -- dead letters the length cap removes per call (the rest: next call)

-- A job's log lines (workers/reporting.py) live as long as the job: ttl 0 deletes, -1 keeps.
local function expire_logs(id, ttl)
  local lk = K.job_logs .. id
  if ttl == 0 then
    redis.call('DEL', lk)
  elseif ttl < 0 then
    redis.call('PERSIST', lk)
  else
    redis.call('EXPIRE', lk, ttl)
  end
end

-- The `error` of a `failed` event: the last error the worker wrote in the job's meta.
local function last_error(meta_json)
  local ok, meta = pcall(cjson.decode, meta_json)
  if ok and type(meta) == 'table' and type(meta.last_error) == 'string' then
    return meta.last_error
  end
  return ''
end

-- The job's effect key ('' if none) if run `exec` owns the job, else nil; then whether the job
-- has log lines (report.lua marks it `logged`).
local function owner_of(id, exec)
  local f = redis.pcall('HMGET', K.job .. id, 'execution', 'effect_key', 'logged', 'flow_parent', 'flow_policy',
    'flow')
  if type(f) ~= 'table' or f.err or f[1] ~= exec then
    return nil
  end
  -- flows.lua: what flow_settled needs, read in the same command
  flow_seen[id] = (f[4] or f[6]) and {f[4], f[5], f[6]} or NOT_IN_A_FLOW
  return f[2] or '', f[3] ~= false
end

-- Whether the call declared the keys settling job `id` touches that only Redis knows of: its effect
-- key, and, if the job `ends` here and is in a flow, its parent's records and the parent's queue
-- (includes/common.lua declared()).
-- A call that declares keys is told them by a caller that read them first (workers/readkeys.py);
-- one that declares none (a test driving a script by hand) always may. false: the item is held,
-- nothing written.
local function may_settle(id, effect_key, ends)
  if #KEYS == 0 then
    return true
  end
  if effect_key ~= '' and not declared(K.effect_key .. effect_key) then
    return false
  end
  local f = ends and flow_seen[id] -- only a job that ends tells its flow parent
  local parent = f and f ~= NOT_IN_A_FLOW and f[1]
  return not parent or may_tell_parent(parent)
end

-- Forget the run: out of rq's running registry and the worker's in-flight set, `execution` cleared
-- (unless the caller's own write of the job hash clears it: `cleared`).
local function take(id, exec, queue, worker, cleared)
  local run = id .. ':' .. exec
  gather('ZREM', keys_of(queue)[3], run) -- a registry holding garbage is reported and left alone
  gather('SREM', inflight_key(worker), run)
  if not cleared then
    redis.call('HDEL', K.job .. id, 'execution')
  end
end

local function release_claim(effect_key, exec)
  if effect_key ~= '' then
    local key = K.effect_key .. effect_key
    if redis.pcall('GET', key) == 'r:' .. exec then
      redis.call('DEL', key)
    end
  end
end

local function add_result(id, ttl, fields)
  local rk = K.results .. id
  if type(redis.pcall('XADD', rk, 'MAXLEN', '10', '*', unpack(fields))) == 'table' then
    redis.call('DEL', rk) -- not a stream: the job's own result stream, replaced
    redis.call('XADD', rk, 'MAXLEN', '10', '*', unpack(fields))
  end
  if ttl < 0 then
    redis.call('PERSIST', rk)
  else
    redis.call('EXPIRE', rk, math.max(1, ttl))
  end
end

-- finish as successful; result_b64 '' means no return value; ttl is checked by the caller;
-- `logged`: the job has log lines, which expire with it; `attempt`, `started_at`, `ended_at`: the
-- run's own (a job finished as a duplicate has none)
local function finish(id, queue, result_b64, ttl, exec, worker, logged, attempt, started_at, ended_at)
  flow_settled(id, queue, 'done', result_b64, ttl) -- flows: a child tells its parent (flows.lua)
  local jk = K.job .. id
  if logged then
    expire_logs(id, ttl)
  end
  if ttl == 0 then
    redis.call('DEL', jk, K.results .. id)
    return
  end
  local in_hash = results_in_hash and result_b64 ~= ''
  -- one write: the attempt, its real start and end, the run forgotten (and the result, in the hash)
  if attempt and in_hash then
    redis.call('HSET', jk, 'status', 'finished', 'ended_at', iso(ended_at), 'attempt', attempt, 'ran', exec,
      'started_at', iso(started_at), 'execution', '', 'return_value', result_b64)
  elseif attempt then
    redis.call('HSET', jk, 'status', 'finished', 'ended_at', iso(ended_at), 'attempt', attempt, 'ran', exec,
      'started_at', iso(started_at), 'execution', '')
  elseif in_hash then
    redis.call('HSET', jk, 'status', 'finished', 'ended_at', now_iso(), 'return_value', result_b64)
  else
    redis.call('HSET', jk, 'status', 'finished', 'ended_at', now_iso())
  end
  local fk = keys_of(queue)[4]
  if ttl < 0 then
    redis.call('PERSIST', jk)
    gather('ZADD', fk, '+inf', id)
  else
    redis.call('EXPIRE', jk, ttl)
    gather('ZADD', fk, now() + ttl, id)
  end
  if result_b64 ~= '' and not in_hash then
    add_result(id, ttl, {'worker_name', worker, 'type', '1', 'return_value', result_b64, 'execution_id', exec})
  end
end

-- The attempt really began (the worker's handler started): it counts, even if the worker dies.
-- item = {id, exec, attempt, started_at}
local function mark_started(item)
  if owner_of(item[1], item[2]) then
    redis.call('HSET', K.job .. item[1], 'attempt', item[3], 'ran', item[2], 'started_at', iso(item[4]))
  end
end

-- Move a job to its queue's dead-letter queue (a real rq queue no worker serves) and to rq's
-- failed registry of its origin queue. Returns how many old dead letters the length cap removed.
local function dead_letter(ctx, id, queue)
  flow_settled(id, queue, 'dead', '', ctx.dlq_retention) -- flows: a child tells its parent (flows.lua)
  local jk = K.job .. id
  local dlq = K.queue .. queue .. K.dlq_suffix
  local stamp = now_iso()
  redis.call('HSET', jk, 'status', 'failed', 'ended_at', stamp, 'dead_lettered_at', stamp)
  redis.call('PERSIST', jk)
  expire_logs(id, ctx.dlq_retention)
  redis.call('RPUSH', dlq, id)
  if usable(K.queues, 'set') then
    redis.call('SADD', K.queues, dlq)
  end
  local failed = K.failed .. queue
  local failed_ok = usable(failed, 'zset')
  if failed_ok then
    redis.call('ZADD', failed, now() + ctx.dlq_retention, id)
  end
  local dropped = 0
  local over = math.min(redis.call('LLEN', dlq) - ctx.dlq_max_length, CAP_PER_CALL)
  while over > 0 do
    if not declared(K.job .. redis.call('LINDEX', dlq, 0)) then
      break -- not among the oldest the caller read: the cap is applied by a later call
    end
    local old = redis.call('LPOP', dlq)
    if failed_ok then
      redis.call('ZREM', failed, old)
    end
    redis.call('DEL', K.job .. old, K.results .. old, K.job_logs .. old)
    dropped = dropped + 1
    over = over - 1
  end
  if dropped > 0 and own(K.dlq_dropped, 'hash') then
    redis.call('HINCRBY', K.dlq_dropped, queue, dropped)
  end
  return dropped
end

-- item = {id, exec, queue, action ('retry' | 'dead'), delay (s), meta_json, exc_b64, hook_job or false,
--         attempt, started_at, ended_at, worker or false}
-- Returns false if the run no longer owned the job, 'held' if a key it needs holds garbage
-- (nothing written), else the count of dead letters the cap dropped.
local function fail(ctx, item)
  local id, exec, queue, action = item[1], item[2], item[3], item[4]
  local needed
  if action == 'retry' then
    needed = usable(K.queue .. queue, 'list') and usable(K.scheduled .. queue, 'zset')
  else
    needed = usable(K.queue .. queue .. K.dlq_suffix, 'list')
  end
  local effect_key = owner_of(id, exec)
  if not effect_key then
    return false
  end
  if not (needed and may_settle(id, effect_key, action ~= 'retry')) then
    return 'held'
  end
  take(id, exec, queue, item[12] or ctx.worker)
  release_claim(effect_key, exec)
  local jk = K.job .. id
  redis.call('HSET', jk, 'meta', item[6], 'attempt', item[9], 'ran', exec,
    'started_at', iso(item[10]), 'ended_at', iso(item[11]))
  add_result(id, ctx.dlq_retention, {'worker_name', item[12] or ctx.worker, 'type', '2',
    'exc_string', item[7], 'execution_id', exec})
  if ctx.events then
    emit(ctx.events, 'failed', id, queue, {'attempt', item[9], 'error', last_error(item[6])})
    if action == 'retry' then
      emit(ctx.events, 'retrying', id, queue, {'delay', item[5]})
    else
      emit(ctx.events, 'dead_lettered', id, queue)
    end
  end
  if action == 'retry' then
    if item[5] > 0 then
      redis.call('HSET', jk, 'status', 'scheduled')
      redis.call('ZADD', K.scheduled .. queue, now() + item[5], id)
      touch(queue)
    else -- at once: a run that was cut off (WorkerLost) goes ahead of work not yet begun
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_iso())
      requeue(queue, id, true)
    end
    return 0
  end
  local dropped = dead_letter(ctx, id, queue)
  if item[8] then
    enqueue_job(item[8])
  end
  return dropped
end

-- item = {id, exec, queue, result_b64, result_ttl, effect_ttl, attempt, started_at, ended_at,
--         effects or false, fallback (a failed item, used if the effects are refused) or false}
-- Returns true, false (the run no longer owned the job), 'held', or {'refused', reason, dropped}.
local function complete(ctx, item)
  local id, exec, queue = item[1], item[2], item[3]
  local effect_key, logged = owner_of(id, exec)
  if not effect_key then
    return false
  end
  if not may_settle(id, effect_key, true) then
    return 'held'
  end
  if item[10] then
    local refused = check_effects(item[10])
    if refused then
      local dropped = fail(ctx, item[11])
      return {'refused', refused, dropped == 'held' and 0 or dropped}
    end
  end
  take(id, exec, queue, ctx.worker, true) -- finish clears `execution` in its own write
  if item[10] then
    apply_effects(item[10])
  end
  if effect_key ~= '' then
    redis.call('SET', K.effect_key .. effect_key, 'd' .. item[4], 'EX', item[6])
  end
  finish(id, queue, item[4], item[5], exec, ctx.worker, logged, item[7], item[8], item[9])
  if ctx.events then -- no table built per job while events are off
    emit(ctx.events, 'completed', id, queue, {'attempt', item[7]})
  end
  return true
end

-- A job that will not run (any more): status canceled, in rq's canceled registry, kept `ttl` s.
local function mark_canceled(id, queue, ttl)
  flow_settled(id, queue, 'canceled', '', ttl) -- flows: a child tells its parent (flows.lua)
  local jk = K.job .. id
  redis.call('HSET', jk, 'status', 'canceled', 'ended_at', now_iso())
  redis.call('EXPIRE', jk, ttl)
  expire_logs(id, ttl)
  if usable(K.canceled .. queue, 'zset') then
    redis.call('ZADD', K.canceled .. queue, now() + ttl, id)
  end
  if usable(K.cancel, 'set') then
    redis.call('SREM', K.cancel, id)
  end
end

-- If run `exec` had begun, the attempt it was counted as is given back.
local function unstart(jk, exec)
  local ran = redis.call('HMGET', jk, 'ran', 'attempt')
  if ran[1] == exec then
    redis.call('HSET', jk, 'attempt', math.max(0, (whole(ran[2], 1, 1000000) or 1) - 1))
    redis.call('HDEL', jk, 'ran')
  end
end

-- The other side asked the job to slow down (RateLimited): it waits `delay` seconds without
-- using an attempt, and its queue (and its type) pause that long for every worker.
-- item = {id, exec, queue, delay, worker or false, {{kind, name}, ...}}
-- Returns true, false (the run no longer owned the job) or 'held'.
local function throttle(ctx, item)
  local id, exec, queue, delay = item[1], item[2], item[3], item[4]
  local effect_key = owner_of(id, exec)
  if not effect_key then
    return false
  end
  if not (usable(K.scheduled .. queue, 'zset') and may_settle(id, effect_key, false)) then
    return 'held'
  end
  for _, target in ipairs(item[6]) do
    if not declared(K.throttle .. target[1] .. ':' .. target[2]) then
      return 'held'
    end
  end
  take(id, exec, queue, item[5] or ctx.worker)
  release_claim(effect_key, exec)
  local jk = K.job .. id
  unstart(jk, exec)
  redis.call('HSET', jk, 'status', 'scheduled')
  redis.call('ZADD', K.scheduled .. queue, now() + delay, id)
  touch(queue)
  for _, target in ipairs(item[6]) do
    local key = K.throttle .. target[1] .. ':' .. target[2]
    redis.call('DEL', key)
    redis.call('SET', key, 1, 'PX', math.max(1, math.floor(delay * 1000)))
  end
  if ctx.events then emit(ctx.events, 'throttled', id, queue, {'delay', delay}) end
  return true
end

-- The job stopped because someone asked it to (Cancelled): it ends canceled, in rq's canceled
-- registry, neither retried nor dead-lettered. item = {id, exec, queue, worker or false}
-- Returns true, false (the run no longer owned the job) or 'held'.
local function cancel_run(ctx, item)
  local id, exec, queue = item[1], item[2], item[3]
  local effect_key = owner_of(id, exec)
  if not effect_key then
    return false
  end
  if not may_settle(id, effect_key, true) then
    return 'held'
  end
  take(id, exec, queue, item[4] or ctx.worker)
  release_claim(effect_key, exec)
  mark_canceled(id, queue, ctx.dlq_retention)
  emit(ctx.events, 'canceled', id, queue)
  return true
end

-- Hand an attempt back to the head of its queue without counting it (shutdown, unstarted work).
-- item = {id, exec, queue, worker or false, lost or false (the count of unstarted runs lost)}
-- Returns true, false (the run no longer owned the job) or 'held'.
local function release(ctx, item)
  local id, exec, queue = item[1], item[2], item[3]
  local effect_key = owner_of(id, exec)
  if not effect_key then
    return false
  end
  if not (usable(K.queue .. queue, 'list') and may_settle(id, effect_key, false)) then
    return 'held'
  end
  take(id, exec, queue, item[4] or ctx.worker)
  release_claim(effect_key, exec)
  local jk = K.job .. id
  unstart(jk, exec)
  redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_iso())
  if item[5] then
    redis.call('HSET', jk, 'lost', item[5])
  end
  requeue(queue, id, true)
  emit(ctx.events, 'released', id, queue)
  return true
end
