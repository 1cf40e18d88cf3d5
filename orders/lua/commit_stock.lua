--[[
  commit_stock: turn an order's held units into sold ones (the order is confirmed).

  Only a reservation in state 'reserved' changes: for each of its lines on_hand -= quantity,
  reserved -= quantity, committed += quantity, and its state becomes 'committed'. Available
  stock (on_hand - reserved) does not move. A committed, released or rejected reservation, or
  an order without one, is left as it is: committing twice is committing once.

  Input:
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON): {order_id, now (unix time, as a string)}

  Output:
    the reservation's state afterwards ('committed', or the state it was left in), or nil when
    the order has no reservation

  Errors (raised before anything is written):
    a SKU of the reservation holding fewer reserved or on-hand units than the reservation
    does, or a stock count that is not an integer

  Events:
    none (the caller records the commit as a domain event)
]]
--- @include "common"
--- @include "stock"

local plan = cjson.decode(ARGV[2])
local record = K.reservation .. plan.order_id

local lines, answer = held(record)
if not lines then
  return answer
end

-- check every line first: nothing below may fail once the first write is done
for _, line in ipairs(lines) do
  local stock = redis.call('HMGET', K.stock .. line.sku, 'on_hand', 'reserved', 'committed')
  local on_hand = count(stock[1], line.sku, 'on_hand')
  local reserved = count(stock[2], line.sku, 'reserved')
  count(stock[3], line.sku, 'committed')
  if reserved < line.quantity or on_hand < line.quantity then
    error('stock of SKU ' .. line.sku .. ' holds ' .. on_hand .. ' on hand and ' .. reserved
      .. ' reserved units, the reservation of order ' .. plan.order_id .. ' ' .. line.quantity)
  end
end

for _, line in ipairs(lines) do
  local key = K.stock .. line.sku
  redis.call('HINCRBY', key, 'on_hand', -line.quantity)
  redis.call('HINCRBY', key, 'reserved', -line.quantity)
  redis.call('HINCRBY', key, 'committed', line.quantity)
end
return close(record, plan.order_id, 'committed', plan.now)
