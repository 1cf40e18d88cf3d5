--[[
  Retention per job type (workers/retention.py): keep the last N finished or dead-lettered jobs
  of a type, and/or those younger than an age.

  A type's kept jobs are the sorted set K.kept .. kind .. ':' .. type (kind: completed or
  failed; score: when settled, in microseconds). Trimming deletes the oldest beyond the count
  and those older than the age (job, result, log keys, and the job's place in rq's registries
  and the dead-letter queue), at most KEEP_CAP_PER_CALL per call; the next call goes on.

  keep_recent(ctx, item), item = {id, job type, 'completed' | 'failed', count or false, age or false}
    After the job was settled in the same call: a job no longer in the state its item names
    (lost, held, refused) is left alone; else it joins its type's set, which is then trimmed.
  trim_kept(kind, job type, count or false, age or false)
    Trim a type's set without adding to it (maintenance: ages pass while nothing settles).
  Both return how many dead letters they removed (counted in K.dlq_dropped, like the cap's).
  A call that declares its keys (keep.lua) trims only jobs whose keys it declared: the caller
  reads the oldest KEEP_CAP_PER_CALL of each set, and each one's queue, just before
  (workers/maintenance.py); trimming stops at the first job it was not told of.
]]

local KEEP_CAP_PER_CALL = 100
local KEPT_STATUS = {completed = 'finished', failed = 'failed'}
local kept_seq = 0 -- orders the jobs one call settles: scores are microseconds plus this
on_call(function() kept_seq = 0 end)

-- Whether forget_kept may touch what deleting kept job `id` touches: its keys, and its queue's
-- registries (read from its hash), all declared (includes/common.lua declared()).
local function may_forget(kind, id)
  if #KEYS == 0 then
    return true -- a call that declares nothing (a test driving a script by hand) is not limited
  end
  local jk = K.job .. id
  if not (declared(jk) and declared(K.results .. id) and declared(K.job_logs .. id)) then
    return false
  end
  local origin = redis.pcall('HGET', jk, 'origin')
  if type(origin) ~= 'string' then
    return true
  end
  if kind == 'completed' then
    return declared(K.finished .. origin)
  end
  return declared(K.queue .. origin .. K.dlq_suffix) and declared(K.failed .. origin) and declared(K.dlq_dropped)
end

-- Delete a kept job that fell out of its type's window, from every registry that lists it; a
-- job no longer in that state (a dead letter requeued since) is only dropped from the window.
-- Returns 1 if a job was deleted.
local function forget_kept(kind, id)
  local jk = K.job .. id
  local f = redis.pcall('HMGET', jk, 'status', 'origin')
  if type(f) ~= 'table' or f.err or f[1] ~= KEPT_STATUS[kind] then
    return 0
  end
  local origin = f[2]
  if type(origin) == 'string' then
    if kind == 'completed' then
      redis.pcall('ZREM', K.finished .. origin, id)
    else
      redis.pcall('LREM', K.queue .. origin .. K.dlq_suffix, 1, id)
      redis.pcall('ZREM', K.failed .. origin, id)
      if own(K.dlq_dropped, 'hash') then
        redis.call('HINCRBY', K.dlq_dropped, origin, 1)
      end
    end
  end
  redis.call('DEL', jk, K.results .. id, K.job_logs .. id)
  return 1
end

local function trim_kept(kind, job_type, count, age)
  local index = K.kept .. kind .. ':' .. job_type
  if not own(index, 'zset') then
    return 0
  end
  local removed, budget = 0, KEEP_CAP_PER_CALL
  -- the oldest first; a job whose keys the call did not declare stops the trim (the next call
  -- goes on, with its keys declared)
  local function trim(ids)
    for _, id in ipairs(ids) do
      if not may_forget(kind, id) then
        return false
      end
      redis.call('ZREM', index, id)
      removed = removed + forget_kept(kind, id)
      budget = budget - 1
    end
    return true
  end
  local going = true
  if age then
    local cutoff = math.floor((now() - age) * 1000000)
    going = trim(redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, budget))
  end
  if going and count and budget > 0 then
    local over = math.min(redis.call('ZCARD', index) - count, budget)
    if over > 0 then
      trim(redis.call('ZRANGE', index, 0, over - 1))
    end
  end
  return kind == 'failed' and removed or 0
end

local function keep_recent(ctx, item)
  local id, job_type, kind, count, age = item[1], item[2], item[3], item[4], item[5]
  local jk = K.job .. id
  if redis.pcall('HGET', jk, 'status') ~= KEPT_STATUS[kind] then
    return 0
  end
  if kind == 'failed' and age then -- rq's failed registry says when it goes
    local origin = redis.pcall('HGET', jk, 'origin')
    if type(origin) == 'string' and usable(K.failed .. origin, 'zset') then
      redis.call('ZADD', K.failed .. origin, 'XX', now() + age, id)
    end
  end
  local index = K.kept .. kind .. ':' .. job_type
  if own(index, 'zset') then
    kept_seq = kept_seq + 1
    redis.call('ZADD', index, math.floor(now() * 1000000) + kept_seq, id)
  end
  return trim_kept(kind, job_type, count, age)
end
