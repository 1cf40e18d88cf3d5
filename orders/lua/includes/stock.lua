--[[
  Shared by the stock scripts.

  count(raw, sku, field)  a stock counter read with HGET/HMGET as an integer (absent: 0);
                          raises, before the script has written anything, if it is not one
  held(record)            the lines a reservation holds (decoded, and as stored); or nil and what
                          the script returns instead: false (no reservation) or its state (not
                          held any more)
  stock_keys(raw, declared)
                          the stock keys of a held reservation's lines, KEYS[3..] in line order,
                          if the caller declared them: it read the lines first (`declared`, the
                          lines as it read them); nil when they differ (a reserve came between)
  close(record, holds, order_id, state, now)
                          the reservation leaves the holds index and takes its final state
]]
local function count(raw, sku, field)
  if not raw then
    return 0
  end
  local n = tonumber(raw)
  if not n or n ~= math.floor(n) or math.abs(n) >= 2^53 then
    error('stock of SKU ' .. sku .. ': ' .. field .. ' is not an integer: ' .. raw)
  end
  return n
end

local function held(record)
  local found = redis.call('HMGET', record, 'state', 'lines')
  if not found[1] then
    return nil, false
  end
  if found[1] ~= 'reserved' then
    return nil, found[1]
  end
  return cjson.decode(found[2]), nil, found[2]
end

local function stock_keys(raw, declared)
  if raw ~= declared then
    return nil
  end
  local keys = {}
  for i = 3, #KEYS do
    keys[#keys + 1] = KEYS[i]
  end
  return keys
end

local function close(record, holds, order_id, state, now)
  redis.call('ZREM', holds, order_id)
  redis.call('HSET', record, 'state', state, 'updated_at', now)
  return state
end
