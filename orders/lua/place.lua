--[[
  place: store a new order, price it from the catalogue, and start its saga, atomically.

  Input (every key the call may touch is declared in KEYS: built by orders/keys.py and
  workers/keys.py, OrderStore.place):
    KEYS[1]  the order             KEYS[2]  its payment method   KEYS[3]  orders by time
    KEYS[4]  saga deadlines        KEYS[5]  the event stream     KEYS[6]  the order's job index
    KEYS[7]  the idempotency key (scoped to the customer), only when the plan has `idempotency`
    then     the stock of each of the order's lines, in order (none when the plan has `prices`)
    then     the keys enqueue_job may touch for each job (Keys.enqueue_job_keys; Lua builds
             those from the keyspace, as the runtime's scripts do)
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON):
      order_id, now
      idempotency   absent when the client gave no key; else {fingerprint (of the request), ttl}
      doc       the order (JSON), each line's unit_price and the total still 0
      saga      the saga state (JSON)
      deadline  when the saga must have moved on (unix time), or null
      max_total the largest total allowed (orders/money.py MAX_AMOUNT: 13 digits, so the total
                is exact in Lua's doubles and in cjson's %.14g)
      event     the OrderPlaced stream entry as a flat field list, without `data`
      index_ttl how long the order's job index (KEYS[6]) is kept after this
      jobs      the saga's first commands, as enqueue_job() takes them
      prices    on Redis Cluster, where the stock is in a slot of its own: each line's
                catalogue price as the caller read it (checked here as if read here); absent:
                read from the stock keys

  Output:
    {'placed', order_id}          stored, event appended, first jobs enqueued
    {'exists', order_id}          the key was used before for the same request: that order,
                                  nothing written
    {'conflict'}                  the key was used before for another request: nothing written
    {'unknown_sku', sku}          a line names a SKU without a catalogue price: nothing written
    {'bad_price', sku, price}     a catalogue price is not a whole number from 0 to max_total
    {'too_large', price, ...}     the total would exceed max_total: each line's unit price, in
                                  order (the caller computes the exact total); nothing written

  Events:
    OrderPlaced on the event stream; signal streams of the queues that got jobs
]]
--- @include "common"
--- @include "enqueue_job"
--- @include "order_index"

local plan = cjson.decode(ARGV[2])
local idem = plan.idempotency
local idem_key = idem and KEYS[7]
local stock_keys = idem and 7 or 6 -- the stock of line i is KEYS[stock_keys + i]
if idem then
  local existing = redis.call('HMGET', idem_key, 'order_id', 'fingerprint')
  if existing[1] then
    if existing[2] == idem.fingerprint then
      return {'exists', existing[1]}
    end
    return {'conflict'}
  end
end

-- price every line before writing anything
local order = cjson.decode(plan.doc)
local total = 0
local prices = {}
for i, line in ipairs(order.lines) do
  local price
  if plan.prices then
    price = plan.prices[i]
  else
    price = redis.call('HGET', KEYS[stock_keys + i], 'price')
  end
  if not price then
    return {'unknown_sku', line.sku}
  end
  local unit = tonumber(price)
  if not unit or unit < 0 or unit ~= math.floor(unit) or unit > plan.max_total then
    return {'bad_price', line.sku, price}
  end
  prices[i] = price
  line.unit_price = unit
  total = total + unit * line.quantity
end
if total > plan.max_total then
  return {'too_large', unpack(prices)}
end
order.total = total
local doc = cjson.encode(order)

if idem then
  redis.call('HSET', idem_key, 'order_id', plan.order_id, 'fingerprint', idem.fingerprint)
  redis.call('EXPIRE', idem_key, idem.ttl)
end
redis.call('HSET', KEYS[1], 'doc', doc, 'saga', plan.saga, 'version', 1, 'status', order.status)
redis.call('SET', KEYS[2], plan.payment_method.token, 'EX', plan.payment_method.ttl)
redis.call('ZADD', KEYS[3], plan.now, plan.order_id)
if plan.deadline ~= cjson.null and plan.deadline then
  redis.call('ZADD', KEYS[4], plan.deadline, plan.order_id)
end
local event = plan.event
event[#event + 1] = 'data'
event[#event + 1] = '{"order":' .. doc .. '}'
redis.call('XADD', KEYS[5], '*', unpack(event))
for _, job in ipairs(plan.jobs) do
  enqueue_job(job, plan.now)
end
index_jobs(KEYS[6], plan.jobs, plan.index_ttl)
flush_touched()
return {'placed', plan.order_id}
