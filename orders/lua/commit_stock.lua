--[[
  commit_stock: turn an order's held units into sold ones (the order is confirmed).

  Only a reservation in state 'reserved' changes: for each of its lines on_hand -= quantity,
  reserved -= quantity, committed += quantity, and its state becomes 'committed'. Available
  stock (on_hand - reserved) does not move. A committed, released or rejected reservation, or
  an order without one, is left as it is: committing twice is committing once.

  Input:
    KEYS[1]  the reservation (OrderKeys.reservation)   KEYS[2]  the holds index (OrderKeys.holds)
    KEYS[3..] the stock of each of the reservation's lines, in order, as the caller read them
    ARGV[1]  keyspace (JSON; unused: every key comes in KEYS)
    ARGV[2]  plan (JSON): {order_id, now (unix time, as a string), lines (the reservation's
             `lines` field as the caller read it; absent if it had none)}

  Output:
    the reservation's state afterwards ('committed', or the state it was left in), or nil when
    the order has no reservation; {'lines', lines} when the reservation holds other lines than
    the caller read (their stock keys were not declared): nothing written, call again with them

  Errors (raised before anything is written):
    a SKU of the reservation holding fewer reserved or on-hand units than the reservation
    does, or a stock count that is not an integer

  Events:
    none (the caller records the commit as a domain event)
]]
--- @include "stock"

local plan = cjson.decode(ARGV[2])
local record = KEYS[1]

local lines, answer, raw = held(record)
if not lines then
  return answer
end
local keys = stock_keys(raw, plan.lines)
if not keys then
  return {'lines', raw}
end

-- check every line first: nothing below may fail once the first write is done
for i, line in ipairs(lines) do
  local stock = redis.call('HMGET', keys[i], 'on_hand', 'reserved', 'committed')
  local on_hand = count(stock[1], line.sku, 'on_hand')
  local reserved = count(stock[2], line.sku, 'reserved')
  count(stock[3], line.sku, 'committed')
  if reserved < line.quantity or on_hand < line.quantity then
    error('stock of SKU ' .. line.sku .. ' holds ' .. on_hand .. ' on hand and ' .. reserved
      .. ' reserved units, the reservation of order ' .. plan.order_id .. ' ' .. line.quantity)
  end
end

for i, line in ipairs(lines) do
  local key = keys[i]
  redis.call('HINCRBY', key, 'on_hand', -line.quantity)
  redis.call('HINCRBY', key, 'reserved', -line.quantity)
  redis.call('HINCRBY', key, 'committed', line.quantity)
end
return close(record, KEYS[2], plan.order_id, 'committed', plan.now)
