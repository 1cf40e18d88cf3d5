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
    KEYS[1]  the reservation (OrderKeys.reservation)   KEYS[2]  the holds index (OrderKeys.holds)
    KEYS[3..] the stock of each of the reservation's lines, in order, as the caller read them
    ARGV[1]  keyspace (JSON; unused: every key comes in KEYS)
    ARGV[2]  plan (JSON): {order_id, now (unix time, as a string), lines (the reservation's
             `lines` field as the caller read it; absent if it had none)}

  Output:
    the reservation's state afterwards: 'released', 'void' (there was none: now there can be
    none), or the state it was left in; {'lines', lines} when the reservation holds other lines
    than the caller read (their stock keys were not declared): nothing written, call again

  Errors (raised before anything is written):
    a SKU of the reservation holding fewer reserved units than the reservation does

  Events:
    none (the caller records the release as a domain event)
]]
--- @include "stock"

local plan = cjson.decode(ARGV[2])
local record = KEYS[1]

local lines, answer, raw = held(record)
if answer == false then
  redis.call('HSET', record, 'state', 'void', 'lines', '[]', 'updated_at', plan.now)
  return 'void'
end
if not lines then
  return answer
end
local keys = stock_keys(raw, plan.lines)
if not keys then
  return {'lines', raw}
end

-- check every line first: nothing below may fail once the first write is done
for i, line in ipairs(lines) do
  local reserved = count(redis.call('HGET', keys[i], 'reserved'), line.sku, 'reserved')
  if reserved < line.quantity then
    error('stock of SKU ' .. line.sku .. ' holds ' .. reserved .. ' reserved units, the reservation of order '
      .. plan.order_id .. ' ' .. line.quantity)
  end
end

for i, line in ipairs(lines) do
  redis.call('HINCRBY', keys[i], 'reserved', -line.quantity)
end
return close(record, KEYS[2], plan.order_id, 'released', plan.now)
