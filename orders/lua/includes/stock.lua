--[[
  Shared by the stock scripts.

  count(raw, sku, field)  a stock counter read with HGET/HMGET as an integer (absent: 0);
                          raises, before the script has written anything, if it is not one
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
