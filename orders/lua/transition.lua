--[[
  transition: commit one saga transition: the order, its saga state, its events and the
  commands it sends, all or nothing, if nobody changed the order since it was read.

  Input:
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON):
      order_id, now
      expected  the order's version when it was read (optimistic concurrency)
      doc, saga, status   the new order (JSON), saga state (JSON) and status
      deadline  when the saga must have moved on (unix time; indexed in K.saga_deadlines for the
                watchdog), or null: it waits for nothing, or a person has been asked
      events    stream entries as flat field lists; the order's version grows by their number
      index_ttl how long the order's job index (K.order_jobs) is kept after this
      jobs      commands to enqueue, as enqueue_job() takes them
      cancel    {{queue, job id}, ...} scheduled jobs to withdraw (a step's time-out check)
      forget_payment_method  true once the charge step can no longer run: its token is deleted

  Output:
    1 when committed, 0 when the order's version was not `expected` (nothing written)

  Events:
    the given events on the event stream; signal streams of the queues that got jobs
]]
--- @include "common"
--- @include "enqueue_job"
--- @include "order_index"

local plan = cjson.decode(ARGV[2])
local key = K.order .. plan.order_id
if tonumber(redis.call('HGET', key, 'version')) ~= plan.expected then
  return 0
end
redis.call('HSET', key, 'doc', plan.doc, 'saga', plan.saga, 'status', plan.status,
  'version', plan.expected + #plan.events)
if plan.deadline ~= cjson.null and plan.deadline then
  redis.call('ZADD', K.saga_deadlines, plan.deadline, plan.order_id)
else
  redis.call('ZREM', K.saga_deadlines, plan.order_id)
end
if plan.forget_payment_method then -- the charge step can no longer run: the token goes
  redis.call('DEL', K.payment_method .. plan.order_id)
end
for _, fields in ipairs(plan.events) do
  redis.call('XADD', K.events, '*', unpack(fields))
end
for _, entry in ipairs(plan.cancel) do
  if redis.call('ZREM', K.scheduled .. entry[1], entry[2]) == 1 then
    redis.call('DEL', K.job .. entry[2])
  end
end
for _, job in ipairs(plan.jobs) do
  enqueue_job(job, plan.now)
end
index_jobs(plan.order_id, plan.jobs, plan.index_ttl)
flush_touched()
return 1
