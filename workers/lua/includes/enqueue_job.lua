--[[
  enqueue_job(job, now): write one job and queue or schedule it.

  job = {id, queue, fields = {k1, v1, ...}, run_at = <unix time, absent for now>,
         at_front = <bool>, enqueue_key = <absent or key>, enqueue_key_ttl = <seconds>}
  The fields already carry status ('queued' or 'scheduled'), set by the caller, which
  decided from the same `now`.

  Returns the job id, or the id of the job an earlier enqueue with the same key created.
]]
local function enqueue_job(job, now)
  if job.enqueue_key then
    local key = K.enqueue_key .. job.enqueue_key
    local existing = redis.call('GET', key)
    if existing then
      return existing
    end
    redis.call('SET', key, job.id, 'EX', job.enqueue_key_ttl)
  end
  redis.call('HSET', K.job .. job.id, unpack(job.fields))
  if job.run_at and job.run_at > now then
    redis.call('ZADD', K.scheduled .. job.queue, job.run_at, job.id)
    touch(job.queue)
  else
    push(job.queue, job.id, job.at_front)
  end
  return job.id
end
