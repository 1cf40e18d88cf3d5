--[[
  enqueue_job(job): write one job and queue or schedule it, by the server's clock.

  job = {id, queue, fields = {k1, v1, ...} (the job hash without status and times),
         delay = <seconds, absent for none> or run_at = <unix time, absent for now>,
         at_front = <bool>, priority = <1..2^21, absent for none: its queue's list>,
         enqueue_key = <absent or key>, enqueue_key_ttl = <seconds>,
         events = <the event stream's cap: a `queued` or `delayed` event>, absent: none}

  The job is due at now() + delay, or at run_at; one due later than now() is scheduled
  (status 'scheduled', in rq's scheduled registry), any other is queued now.

  Returns the job id, or the id of the job an earlier enqueue with the same key created, or
  false (nothing written) when the key the job goes to (the queue's list, its prioritized set or
  its scheduled registry) holds something else (reported in `problems`).
]]
-- the effect key among a job's fields ('' if none)
local function effect_key_of(fields)
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'effect_key' then
      return fields[i + 1]
    end
  end
  return ''
end

local function enqueue_job(job)
  local keys = keys_of(job.queue)
  local at = now()
  local due = job.run_at or (job.delay and at + job.delay) or at
  -- the one key the job goes to is checked before anything is written: the scheduled registry,
  -- the prioritized set, or the queue's list
  local target = (due > at and keys[2]) or (job.priority and keys[5]) or keys[1]
  if not usable(target, (target == keys[1]) and 'list' or 'zset') then
    return false
  end
  local ek
  if job.enqueue_key then
    ek = K.enqueue_key .. job.enqueue_key
    local existing = redis.pcall('GET', ek)
    if type(existing) == 'string' then
      return existing
    elseif type(existing) == 'table' then -- not a string: garbage in the key's place
      problem(ek, 'holds no job id: replaced')
      redis.call('DEL', ek)
    end
  end
  local stamp = iso(at)
  local fields = job.fields
  fields[#fields + 1] = 'created_at'
  fields[#fields + 1] = stamp
  fields[#fields + 1] = 'status'
  if due > at then
    fields[#fields + 1] = 'scheduled'
  else
    fields[#fields + 1] = 'queued'
    fields[#fields + 1] = 'enqueued_at'
    fields[#fields + 1] = stamp
  end
  -- the first write: if the job's key holds something else than a hash, nothing is written
  if type(redis.pcall('HSET', K.job .. job.id, unpack(fields))) == 'table' then
    problem(K.job .. job.id, 'holds something else than a job hash: not enqueued')
    return false
  end
  if ek then
    redis.call('SET', ek, job.id, 'EX', job.enqueue_key_ttl)
  end
  if due > at then
    redis.call('ZADD', target, due, job.id)
    touch(job.queue)
    hint(job.queue, false, due)
  else
    if job.priority then
      redis.call('ZADD', target, priority_score(job.queue, job.priority, job.at_front), job.id)
      touch(job.queue)
    else
      push(job.queue, job.id, job.at_front)
    end
    hint(job.queue, job.id, effect_key_of(fields))
  end
  emit(job.events, due > at and 'delayed' or 'queued', job.id, job.queue)
  return job.id
end
