--[[
  release: give back the units an order holds (a cancelled or failed order).

  Only a reservation in state 'reserved' changes: reserved -= quantity for each of its lines,
  and its state becomes 'released'. A released, committed, rejected or void reservation is
  left as it is: releasing twice is releasing once.

  An order without a reservation gets a 'void' one (no lines): the release came first, so a
  reserve still on its way (a step that was given up but had not reached us yet) finds the
  order's outcome decided and holds nothing. Without this, that late reserve would hold the
  stock of a cancelled order for ever.

  Input:
    ARGV[1]  keyspace (JSON, orders/keys.py)
    ARGV[2]  plan (JSON): {order_id, now (unix time, as a string)}

  Output:
    the reservation's state afterwards: 'released', 'void' (there was none: now there can be
    none), or the state it was left in

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
if answer == false then
  redis.call('HSET', record, 'state', 'void', 'lines', '[]', 'updated_at', plan.now)
  return 'void'
end
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
