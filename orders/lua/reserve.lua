--[[
  reserve: hold stock for every line of an order, or for none of them.

  A line is short when its SKU has fewer units available (on_hand - reserved) than it asks
  for; a SKU that is not in the catalogue has none. One short line rejects the whole order
  and holds nothing. A rejection is recorded too: the order's outcome is decided once.

  Input:
    KEYS[1]  the reservation (OrderKeys.reservation)   KEYS[2]  the catalogue (OrderKeys.skus)
    KEYS[3]  the holds index (OrderKeys.holds)   KEYS[3 + i]  the stock of plan.lines[i]
    ARGV[1]  keyspace (JSON; unused: every key comes in KEYS)
    ARGV[2]  plan (JSON): {order_id, now (unix time, as a string), lines = {{sku, quantity}, ...}}
             (one line per SKU: the caller aggregates duplicates)

  Output:
    {state, lines, shortage}: state is 'reserved' or 'rejected', lines the reservation's lines
    as JSON ({sku, quantity}), shortage the short lines as JSON ({sku, requested, available};
    '[]' when reserved). When the order already has a reservation record, that record's
    outcome is returned and nothing is written, whatever the plan's lines: among them 'void',
    written by a release that came first (release.lua): this reserve holds nothing.

  Errors (raised before anything is written):
    no lines, a quantity that is not a positive integer, a stock count that is not an integer

  A held reservation is also indexed in the holds index (order id -> time held), for the job that
  releases holds older than their hold time.

  Events:
    none (the caller records the outcome as a domain event)
]]
--- @include "stock"

local plan = cjson.decode(ARGV[2])
local record, skus, holds = KEYS[1], KEYS[2], KEYS[3]

local function available(sku, key)
  if redis.call('SISMEMBER', skus, sku) == 0 then
    return 0
  end
  local stock = redis.call('HMGET', key, 'on_hand', 'reserved')
  if not stock[1] then
    return 0
  end
  return count(stock[1], sku, 'on_hand') - count(stock[2], sku, 'reserved')
end

local existing = redis.call('HMGET', record, 'state', 'lines', 'shortage')
if existing[1] then
  return {existing[1], existing[2] or '[]', existing[3] or '[]'}
end

-- read and check everything first: nothing below may fail once the first write is done
local lines = {}
for i, line in ipairs(plan.lines) do
  local sku, quantity = line[1], line[2]
  if type(quantity) ~= 'number' or quantity < 1 or quantity ~= math.floor(quantity) then
    error('line ' .. i .. ' (SKU ' .. tostring(sku) .. '): quantity must be a positive integer')
  end
  lines[i] = {sku = sku, quantity = quantity}
  if not KEYS[3 + i] then
    error('line ' .. i .. ' (SKU ' .. tostring(sku) .. '): its stock key is not declared')
  end
end
if #lines == 0 then
  error('a reservation needs at least one line')
end

local shortage = {}
for i, line in ipairs(lines) do
  local free = available(line.sku, KEYS[3 + i])
  if line.quantity > free then
    shortage[#shortage + 1] = {sku = line.sku, requested = line.quantity, available = math.max(free, 0)}
  end
end

local lines_json = cjson.encode(lines)
if #shortage > 0 then
  local shortage_json = cjson.encode(shortage)
  redis.call('HSET', record, 'state', 'rejected', 'lines', lines_json, 'shortage', shortage_json,
    'updated_at', plan.now)
  return {'rejected', lines_json, shortage_json}
end

for i, line in ipairs(lines) do
  redis.call('HINCRBY', KEYS[3 + i], 'reserved', line.quantity)
end
redis.call('ZADD', holds, plan.now, plan.order_id)
redis.call('HSET', record, 'state', 'reserved', 'lines', lines_json, 'reserved_at', plan.now,
  'updated_at', plan.now)
return {'reserved', lines_json, '[]'}
