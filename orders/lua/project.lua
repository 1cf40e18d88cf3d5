--[[
  project: write a batch of order summaries to the read model, all or nothing, if none of
  them changed since it was read; then acknowledge the events they came from.

  The projector decides everything (orders/readmodel.py); this script only checks versions
  and writes. All keys come in the plan, built by orders/keys.py.

  Input:
    ARGV[1]  keyspace (JSON, orders/keys.py; unused but for uniformity)
    ARGV[2]  plan (JSON):
      writes  {{key, expected, doc?, version?, id, placed_at, status_key?, old_status_key?,
                all_key, customer_key, parked_key, park = {{seq, event}, ...}, unpark = {seq, ...},
                channel?}, ...}
              expected: the summary's version when read (-1: none yet)
      stream, group, ack   the entries to acknowledge (optional)

  Output:
    {1} when written; {0, {indexes of the writes whose summary had changed}} when not

  Events:
    PUBLISH "<version> <status>" on a write's channel (current generation only)
]]
local plan = cjson.decode(ARGV[2])

local conflicts = {}
for i, w in ipairs(plan.writes) do
  local have = redis.call('HGET', w.key, 'version')
  if (have and tonumber(have) or -1) ~= w.expected then
    conflicts[#conflicts + 1] = i
  end
end
if #conflicts > 0 then
  return {0, conflicts}
end

for _, w in ipairs(plan.writes) do
  if w.doc then
    redis.call('HSET', w.key, 'doc', w.doc, 'version', w.version)
    if w.old_status_key and w.old_status_key ~= w.status_key then
      redis.call('ZREM', w.old_status_key, w.id)
    end
    redis.call('ZADD', w.status_key, w.placed_at, w.id)
    redis.call('ZADD', w.all_key, w.placed_at, w.id)
    redis.call('ZADD', w.customer_key, w.placed_at, w.id)
    if w.channel then
      redis.call('PUBLISH', w.channel, w.version .. ' ' .. w.status)
    end
  end
  for _, parked in ipairs(w.park) do
    redis.call('HSET', w.parked_key, parked[1], parked[2])
  end
  if #w.unpark > 0 then
    redis.call('HDEL', w.parked_key, unpack(w.unpark))
  end
end
if plan.ack and #plan.ack > 0 then
  redis.call('XACK', plan.stream, plan.group, unpack(plan.ack))
end
return {1}
