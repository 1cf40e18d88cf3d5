--[[
  place: store a new order, price it from the catalogue, and start its saga, atomically.

  Input:
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON):
      order_id, now
      idempotency_key, idempotency_ttl   absent when the client gave no key
      doc     the order (JSON), each line's unit_price and the total still 0
      saga    the saga state (JSON)
      event   the OrderPlaced stream entry as a flat field list, without `data`
      jobs    the saga's first commands, as enqueue_job() takes them

  Output:
    {'placed', order_id, total}    stored, event appended, first jobs enqueued
    {'exists', order_id}           the idempotency key was used before: that order, nothing written
    {'unknown_sku', sku}           a line names a SKU without a catalogue price: nothing written

  Events:
    OrderPlaced on the event stream; signal streams of the queues that got jobs
]]
--- @include "common"
--- @include "enqueue_job"

local plan = cjson.decode(ARGV[2])
local idem_key
if plan.idempotency_key then
  idem_key = K.order_idempotency .. plan.idempotency_key
  local existing = redis.call('GET', idem_key)
  if existing then
    return {'exists', existing}
  end
end

-- price every line before writing anything
local order = cjson.decode(plan.doc)
local total = 0
for _, line in ipairs(order.lines) do
  local price = redis.call('HGET', K.stock .. line.sku, 'price')
  if not price then
    return {'unknown_sku', line.sku}
  end
  line.unit_price = tonumber(price)
  total = total + line.unit_price * line.quantity
end
order.total = total
local doc = cjson.encode(order)

if idem_key then
  redis.call('SET', idem_key, plan.order_id, 'EX', plan.idempotency_ttl)
end
redis.call('HSET', K.order .. plan.order_id, 'doc', doc, 'saga', plan.saga, 'version', 1, 'status', order.status)
redis.call('ZADD', K.orders_by_time, plan.now, plan.order_id)
local event = plan.event
event[#event + 1] = 'data'
event[#event + 1] = '{"order":' .. doc .. '}'
redis.call('XADD', K.events, '*', unpack(event))
for _, job in ipairs(plan.jobs) do
  enqueue_job(job, plan.now)
end
flush_touched()
return {'placed', plan.order_id, tostring(total)}
