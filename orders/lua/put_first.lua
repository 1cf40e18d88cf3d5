--[[
  put_first: of two hashes that exclude each other per field, write `field` into `target`
  unless either already has it; say which one has it now, and what it holds.

  Used by the simulated payment gateway and carrier, whose idempotency records and voids are
  such a pair: a charge (target 'charges') and the void of its key by a refund that found
  nothing (target 'voided') race for the same key, and the first one wins for good. So a
  charge that arrives after its order gave it up and voided it can never take money.

  Input:
    KEYS[1]  target, KEYS[2]  rival (hash keys, built by orders/keys.py)
    ARGV[1]  keyspace (JSON; unused but for uniformity: the keys come in KEYS)
    ARGV[2]  plan (JSON): {field, value}

  Output:
    {'target', stored value}  `field` is in `target` (written now, or it was there before)
    {'rival', stored value}   `field` is in `rival`: nothing written

  Events:
    none
]]
local plan = cjson.decode(ARGV[2])

local target, rival_key = KEYS[1], KEYS[2]

local rival = redis.call('HGET', rival_key, plan.field)
if rival then
  return {'rival', rival}
end
redis.call('HSETNX', target, plan.field, plan.value)
return {'target', redis.call('HGET', target, plan.field)}
