--[[
  project: write a batch of order summaries to the read model, all or nothing, if none of
  them changed since it was read; park the entries the projector cannot read in its
  dead-letter stream; then acknowledge the batch.

  The projector decides everything (orders/readmodel.py); this script only checks versions
  and writes. Every key it may touch is declared in KEYS, each once (built by orders/keys.py);
  the plan names a key by its index in KEYS: `current`, `generations`, each `*key` of a write,
  park's `stream` and each ack's stream below are such indexes.

  Input:
    KEYS     every key of the plan (orders/readmodel.py _keyed)
    ARGV[1]  keyspace (JSON; unused but for uniformity: '{}')
    ARGV[2]  plan (JSON):
      writes  {{gen, key, expected, doc?, version?, id, placed_at, status_key?, old_status_key?,
                all_key, customer_key, parked_key, park = {{seq, event}, ...}, unpark = {seq, ...},
                channel?, base?, base_clear?, history_key, history_add = {{seq, event}, ...},
                history_clear}, ...}
              expected: the summary's version when read (-1: none yet)
              base: the summary before the order's first unreadable event (kept until it is read)
      generations, current   the keys of the active generations (set) and the current one
      park    {stream, entries = {{field, value, ...}, ...}}: entries to park (optional)
      acks    {{stream, group, {id, ...}, delete}, ...}: entries to acknowledge (and delete,
              for a replay stream) (optional)

  A write to a generation that is no longer active (dropped after a rebuild while this batch
  was being decided) is left out: a dropped generation never comes back.

  Output:
    {1} when written; {0, {indexes of the writes whose summary had changed}} when not

  Events:
    PUBLISH "<version> <status>" on a write's channel (current generation only)
]]
local plan = cjson.decode(ARGV[2])

local current = tonumber(redis.call('GET', KEYS[plan.current]) or '1')
local function active(gen)
  return gen == current or redis.call('SISMEMBER', KEYS[plan.generations], tostring(gen)) == 1
end

local conflicts = {}
for i, w in ipairs(plan.writes) do
  local have = redis.call('HGET', KEYS[w.key], 'version')
  if active(w.gen) and (have and tonumber(have) or -1) ~= w.expected then
    conflicts[#conflicts + 1] = i
  end
end
if #conflicts > 0 then
  return {0, conflicts}
end

for _, w in ipairs(plan.writes) do
  if active(w.gen) then
    if w.doc then
      redis.call('HSET', KEYS[w.key], 'doc', w.doc, 'version', w.version)
      if w.old_status_key and w.old_status_key ~= w.status_key then
        redis.call('ZREM', KEYS[w.old_status_key], w.id)
      end
      redis.call('ZADD', KEYS[w.status_key], w.placed_at, w.id)
      redis.call('ZADD', KEYS[w.all_key], w.placed_at, w.id)
      redis.call('ZADD', KEYS[w.customer_key], w.placed_at, w.id)
      if w.channel then
        redis.call('PUBLISH', w.channel, w.version .. ' ' .. w.status)
      end
    end
    if w.base then
      redis.call('HSET', KEYS[w.key], 'base', w.base)
    elseif w.base_clear then
      redis.call('HDEL', KEYS[w.key], 'base')
    end
    if w.history_clear then
      redis.call('DEL', KEYS[w.history_key])
    end
    for _, kept in ipairs(w.history_add) do
      redis.call('HSET', KEYS[w.history_key], kept[1], kept[2])
    end
    for _, parked in ipairs(w.park) do
      redis.call('HSET', KEYS[w.parked_key], parked[1], parked[2])
    end
    if #w.unpark > 0 then
      redis.call('HDEL', KEYS[w.parked_key], unpack(w.unpark))
    end
  end
end
if plan.park then
  for _, fields in ipairs(plan.park.entries) do
    redis.call('XADD', KEYS[plan.park.stream], '*', unpack(fields))
  end
end
for _, ack in ipairs(plan.acks or {}) do
  if #ack[3] > 0 then
    redis.call('XACK', KEYS[ack[1]], ack[2], unpack(ack[3]))
    if ack[4] then
      redis.call('XDEL', KEYS[ack[1]], unpack(ack[3]))
    end
  end
end
return {1}
