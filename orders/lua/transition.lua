--[[
  transition: commit one saga transition: the order, its saga state, its events and the
  commands it sends, all or nothing, if nobody changed the order since it was read.

  Input (every key the call may touch is declared in KEYS: built by orders/keys.py and
  workers/keys.py, OrderStore.commit):
    KEYS[1]  the order             KEYS[2]  saga deadlines       KEYS[3]  its payment method
    KEYS[4]  the event stream      KEYS[5]  the order's job index
    KEYS[4 + 2i], KEYS[5 + 2i]  the scheduled registry of cancel[i]'s queue, and its job
    then     the keys enqueue_job may touch for each job (Keys.enqueue_job_keys; Lua builds
             those from the keyspace, as the runtime's scripts do)
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON):
      order_id, now
      expected  the order's version when it was read (optimistic concurrency)
      doc, saga, status   the new order (JSON), saga state (JSON) and status
      deadline  when the saga must have moved on (unix time; indexed in saga deadlines for the
                watchdog), or null: it waits for nothing, or a person has been asked
      events    stream entries as flat field lists; the order's version grows by their number
      index_ttl how long the order's job index (KEYS[5]) is kept after this
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
local key = KEYS[1]
if tonumber(redis.call('HGET', key, 'version')) ~= plan.expected then
  return 0
end
redis.call('HSET', key, 'doc', plan.doc, 'saga', plan.saga, 'status', plan.status,
  'version', plan.expected + #plan.events)
if plan.deadline ~= cjson.null and plan.deadline then
  redis.call('ZADD', KEYS[2], plan.deadline, plan.order_id)
else
  redis.call('ZREM', KEYS[2], plan.order_id)
end
if plan.forget_payment_method then -- the charge step can no longer run: the token goes
  redis.call('DEL', KEYS[3])
end
for _, fields in ipairs(plan.events) do
  redis.call('XADD', KEYS[4], '*', unpack(fields))
end
for i, entry in ipairs(plan.cancel) do
  if redis.call('ZREM', KEYS[4 + 2 * i], entry[2]) == 1 then
    redis.call('DEL', KEYS[5 + 2 * i])
  end
end
for _, job in ipairs(plan.jobs) do
  enqueue_job(job, plan.now)
end
index_jobs(KEYS[5], plan.jobs, plan.index_ttl)
flush_touched()
return 1
