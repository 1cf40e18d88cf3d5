--[[
  A job's Redis effects (workers/effects.py), applied together with its completion.

  check_effects(effects)  nil if every effect can be applied, else why not. Checks, before
                          anything is written, that each key is absent or of the type its command
                          needs, and that every counter an increment touches is an integer that
                          stays below 2^53, simulating the effects in order
  apply_effects(effects)  applies them (after check_effects said yes: none can fail then)

  effects = {{command, key, args...}, ...}: commands from EFFECTS below, arguments as built and
  checked by workers/effects.py.
]]

local EFFECTS = {
  SET = 'string', INCRBY = 'string', DEL = false, EXPIRE = false,
  HSET = 'hash', HINCRBY = 'hash', HDEL = 'hash',
  SADD = 'set', SREM = 'set',
  ZADD = 'zset', ZINCRBY = 'zset', ZREM = 'zset',
  RPUSH = 'list', LPUSH = 'list',
  XADD = 'stream',
}
local COUNTER_LIMIT = 9007199254740992 -- 2^53: beyond it a Lua number is no longer exact

local function check_effects(effects)
  local types, values, cleared = {}, {}, {}

  local function type_of(key)
    local found = types[key]
    if found == nil then
      found = redis.call('TYPE', key)
      found = type(found) == 'table' and found.ok or found
      types[key] = found
    end
    return found
  end

  local function counter(key, field)
    local slot = field and (key .. '\0' .. field) or key
    local value = values[slot]
    if value == nil then
      if cleared[key] then
        value = '0'
      elseif field then
        value = redis.call('HGET', key, field) or '0'
      else
        value = redis.call('GET', key) or '0'
      end
    end
    return slot, value
  end

  for i, effect in ipairs(effects) do
    local command, key = effect[1], effect[2]
    local wanted = EFFECTS[command]
    if wanted == nil or type(key) ~= 'string' then
      return 'effect ' .. i .. ': ' .. tostring(command) .. ' is not an allowed command'
    end
    local found = type_of(key)
    if wanted and found ~= 'none' and found ~= wanted then
      return 'effect ' .. i .. ' (' .. command .. ' ' .. key .. '): the key holds a ' .. found ..
        ', not a ' .. wanted
    end
    if command == 'INCRBY' or command == 'HINCRBY' then
      local field = command == 'HINCRBY' and effect[3] or nil
      local delta = tonumber(field and effect[4] or effect[3])
      local slot, value = counter(key, field)
      local current = tonumber(value)
      if not current or current ~= math.floor(current) or math.abs(current) >= COUNTER_LIMIT then
        return 'effect ' .. i .. ' (' .. command .. ' ' .. key .. (field and (' ' .. field) or '') ..
          '): the value is not an integer'
      end
      if not delta or math.abs(current + delta) >= COUNTER_LIMIT then
        return 'effect ' .. i .. ' (' .. command .. ' ' .. key .. '): the counter would overflow'
      end
      values[slot] = tostring(current + delta)
    elseif command == 'SET' then
      values[key] = effect[3]
    elseif command == 'HSET' then
      for j = 3, #effect, 2 do
        values[key .. '\0' .. effect[j]] = effect[j + 1]
      end
    elseif command == 'HDEL' then
      for j = 3, #effect do
        values[key .. '\0' .. effect[j]] = '0' -- absent: an increment starts from 0
      end
    end
    if command == 'DEL' then
      for slot, _ in pairs(values) do
        if slot == key or string.sub(slot, 1, #key + 1) == key .. '\0' then
          values[slot] = nil
        end
      end
      types[key], cleared[key] = 'none', true
    elseif wanted then
      types[key] = wanted
    end
  end
  return nil
end

local function apply_effects(effects)
  for _, effect in ipairs(effects) do
    redis.call(unpack(effect))
  end
end
