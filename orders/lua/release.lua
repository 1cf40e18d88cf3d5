--[[
  release: give back the units an order holds (a cancelled or failed order).

  Only a reservation in state 'reserved' changes: reserved -= quantity for each of its lines,
  and its state becomes 'released'. A released, committed or rejected reservation, or an
  order without one, is left as it is: releasing twice is releasing once.

  Input:
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON): {order_id, now (unix time, as a string)}

  Output:
    the reservation's state afterwards ('released', or the state it was left in), or nil when
    the order has no reservation

  Errors (raised before anything is written):
    a SKU of the reservation holding fewer reserved units than the reservation does

  Events:
    none (the caller records the release as a domain event)
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
  local reserved = count(redis.call('HGET', K.stock .. line.sku, 'reserved'), line.sku, 'reserved')
  if reserved < line.quantity then
    error('stock of SKU ' .. line.sku .. ' holds ' .. reserved .. ' reserved units, the reservation of order '
      .. plan.order_id .. ' ' .. line.quantity)
  end
end

for _, line in ipairs(lines) do
  redis.call('HINCRBY', K.stock .. line.sku, 'reserved', -line.quantity)
end
return close(record, plan.order_id, 'released', plan.now)
