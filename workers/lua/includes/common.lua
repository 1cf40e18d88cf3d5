--[[
  Shared by every script: the keyspace and the wake-up signals.

  K          the key prefixes from workers/keys.py (ARGV[1] of every script)
  touch(q)   note that queue q got work; flush_touched() then registers each touched queue
             in rq:queues and appends one entry to its signal stream (idle workers block on it)
]]
local K = cjson.decode(ARGV[1])
local touched = {}

local function touch(queue)
  touched[queue] = true
end

local function flush_touched()
  for queue, _ in pairs(touched) do
    redis.call('SADD', K.queues, K.queue .. queue)
    redis.call('XADD', K.signal .. queue, 'MAXLEN', '1', '*', 'q', queue)
  end
  touched = {}
end

local function push(queue, id, at_front)
  if at_front then
    redis.call('LPUSH', K.queue .. queue, id)
  else
    redis.call('RPUSH', K.queue .. queue, id)
  end
  touch(queue)
end

local function inflight_key(worker)
  return K.inflight .. worker .. K.inflight_suffix
end
