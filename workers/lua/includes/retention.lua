--[[
  Retention per job type (workers/retention.py): keep the last N finished or dead-lettered jobs
  of a type, and dead letters for at most an age.

  keep_recent(ctx, item), item = {id, job type, 'completed' | 'failed', count or false, age or false}
    Runs after the job was settled in the same call; a job no longer in the state its item
    names (lost, held, refused) is left alone. A dead letter with an age expires after it
    (its job, result and log keys; its failed-registry score); the id it leaves in the
    dead-letter list is dropped by the retention pass (workers/deadletter.py). With a count,
    the job joins the sorted set K.kept .. kind .. ':' .. type (score: now, in microseconds) and the oldest
    beyond the count are deleted, at most CAP_PER_CALL per call (the next settle goes on).
    Returns how many dead letters it removed (counted in K.dlq_dropped).
]]

local KEEP_CAP_PER_CALL = 100
local kept_seq = 0 -- orders the jobs one call settles: scores are microseconds plus this
local KEPT_STATUS = {completed = 'finished', failed = 'failed'}

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

local function keep_recent(ctx, item)
  local id, job_type, kind, count, age = item[1], item[2], item[3], item[4], item[5]
  local jk = K.job .. id
  if redis.pcall('HGET', jk, 'status') ~= KEPT_STATUS[kind] then
    return 0
  end
  if kind == 'failed' and age then
    redis.call('EXPIRE', jk, age)
    redis.call('EXPIRE', K.results .. id, age)
    redis.call('EXPIRE', K.job_logs .. id, age)
    local origin = redis.pcall('HGET', jk, 'origin')
    if type(origin) == 'string' and usable(K.failed .. origin, 'zset') then
      redis.call('ZADD', K.failed .. origin, 'XX', now() + age, id)
    end
  end
  if not count then
    return 0
  end
  local index = K.kept .. kind .. ':' .. job_type
  if not own(index, 'zset') then
    return 0
  end
  kept_seq = kept_seq + 1
  redis.call('ZADD', index, math.floor(now() * 1000000) + kept_seq, id)
  local over = math.min(redis.call('ZCARD', index) - count, KEEP_CAP_PER_CALL)
  if over <= 0 then
    return 0
  end
  local removed = 0
  local oldest = redis.call('ZPOPMIN', index, over)
  for i = 1, #oldest, 2 do
    removed = removed + forget_kept(kind, oldest[i])
  end
  return kind == 'failed' and removed or 0
end
