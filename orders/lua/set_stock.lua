--[[
  set_stock: set a SKU's units on hand (an absolute count) and, if given, its price.

  The SKU joins the catalogue (the skus set); its reserved and committed counts start at 0
  and are otherwise left alone. Refused, with nothing written, when on_hand would fall below
  the units reserved, or when the SKU has no price yet and the plan gives none.

  Input:
    KEYS[1]  the SKU's stock (OrderKeys.stock)   KEYS[2]  the catalogue (OrderKeys.skus)
    ARGV[1]  keyspace (JSON; unused: every key comes in KEYS)
    ARGV[2]  plan (JSON): {sku, on_hand, price (optional; minor units)}
             (validated by the caller: a valid SKU, non-negative integers)

  Output:
    {'ok', on_hand, reserved, committed, price} (the stock afterwards), or
    {'below_reserved', reserved}, or {'no_price'} (refused; nothing written)

  Errors (raised before anything is written):
    a stock count that is not an integer

  Events:
    none
]]
local plan = cjson.decode(ARGV[2])
local key = KEYS[1]
local has_price = type(plan.price) == 'number'

local found = redis.call('HMGET', key, 'reserved', 'price')
local reserved = 0
if found[1] then
  reserved = tonumber(found[1])
  if not reserved or reserved ~= math.floor(reserved) then
    error('stock of SKU ' .. plan.sku .. ': reserved is not an integer: ' .. found[1])
  end
end
if not has_price and not found[2] then
  return {'no_price'}
end
if plan.on_hand < reserved then
  return {'below_reserved', reserved}
end

redis.call('HSET', key, 'on_hand', string.format('%d', plan.on_hand))
if has_price then
  redis.call('HSET', key, 'price', string.format('%d', plan.price))
end
redis.call('HSETNX', key, 'reserved', '0')
redis.call('HSETNX', key, 'committed', '0')
redis.call('SADD', KEYS[2], plan.sku)
local level = redis.call('HMGET', key, 'on_hand', 'reserved', 'committed', 'price')
return {'ok', level[1], level[2], level[3], level[4]}
