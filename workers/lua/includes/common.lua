--[[
  Shared by every script: the keyspace, the server's clock, defensive reads, wake-up signals.

  K             the key prefixes from workers/keys.py (ARGV[1] of every script)
  now()         the server's time (TIME), read once per call: every decision about liveness,
                due times and expiry uses it, never a client's clock
  iso(t)        a Unix time in rq's timestamp format (2026-12-02T10:00:00.123456Z); now_iso(): iso(now()),
                formatted once per call
  whole(raw, lo, hi)
                a value read from Redis as a whole number within [lo, hi], or nil: nothing a
                script reads is trusted to be what it should be
  usable(key, type)
                whether `key` may be written as `type` ('list', 'zset', 'hash', 'set', 'stream',
                'string'): absent or of that type. A key of another type (hand-written garbage)
                is reported in `problems` and left alone; the result is cached for the call
  own(key, type)
                for keys only the runtime writes (liveness, in-flight sets, counters): a key of
                another type is deleted, reported, and used afresh
  problems      {key, what} pairs the script could not use, returned to the caller to log
  push(q, id, front), requeue(q, id, front)
                put a job on its queue's list; requeue also honours the job's priority (its
                queue's prioritized set), for retries, hand-backs and requeued dead letters
  declared(key) whether the call declared `key` in KEYS (always true for a call declaring none)
  begin()       a call's start: the keyspace, and fresh per-call state (see the end of this file)
  on_call(fn)   an include's own per-call state: fn resets it at every call's begin()
  keys_of(q)    queue q's keys {list, scheduled, wip, finished, prioritized}, built once per call;
                inflight_key(worker) likewise
  touch(q)      note that queue q got work; flush_touched() then registers each touched queue
                in rq:queues and appends one entry to its signal stream (idle workers block on it);
                hint(q, id, ek) names the job in that entry when it was the call's only work for q
  try(kind, cmd, key, ...)
                a command that fails without effect on a key of another type, under pcall: its
                reply, or nil (the key reported as usable() does); no TYPE call beforehand
  gather(cmd, key, a[, b])
                a member write (ZADD, ZREM, SADD, SREM) to a registry or set (under try): run at once, or,
                once a script sets `gathering` (step.lua), kept and sent by flush_gathered() as one
                command per key for the whole call (1,000 members at most per command). Only for
                writes whose order against the call's other commands does not matter: the
                call reads none of those members before the flush. guarded(fn, ...) runs fn and
                flushes what it gathered even if it fails
]]
local K, K_RAW -- the keyspace, decoded once per distinct ARGV[1] (begin(), at the end)
local declared_keys -- KEYS as a set, built on the first declared() of a call
local touched = {} -- queue -> how many times the call gave it work
local hints = {} -- queue -> {id, effect key} of the job an enqueue put in its line (hint())
local gathered, gathered_order, gathering = {}, {}, false
local problems = {}
local checked = {}
local NOW

local function now()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return NOW
end

local iso_secs, iso_prefix -- the last second formatted: a call's times mostly share it

local function iso(ts)
  local secs = math.floor(ts)
  local micro = math.floor((ts - secs) * 1000000 + 0.5)
  if micro >= 1000000 then
    secs, micro = secs + 1, micro - 1000000
  end
  if secs ~= iso_secs then
    local days = math.floor(secs / 86400)
    local rem = secs - days * 86400
    -- days since 1970-01-01 to a civil date (H. Hinnant's algorithm)
    local z = days + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local day = doy - math.floor((153 * mp + 2) / 5) + 1
    local month = mp < 10 and mp + 3 or mp - 9
    local year = yoe + era * 400 + (month <= 2 and 1 or 0)
    iso_secs = secs
    iso_prefix = string.format('%04d-%02d-%02dT%02d:%02d:%02d', year, month, day,
      math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
  end
  return string.format('%s.%06dZ', iso_prefix, micro)
end

local NOW_ISO

-- iso(now()), formatted once per call
local function now_iso()
  if not NOW_ISO then
    NOW_ISO = iso(now())
  end
  return NOW_ISO
end

local function whole(raw, lo, hi)
  local n = tonumber(raw)
  if not n or n ~= n or n ~= math.floor(n) or n < lo or n > hi then
    return nil
  end
  return n
end

local function problem(key, what)
  problems[#problems + 1] = {key, what}
end

local function usable(key, kind)
  local ok = checked[key]
  if ok == nil then
    local found = redis.call('TYPE', key)
    found = type(found) == 'table' and found.ok or found
    ok = found == 'none' or found == kind
    checked[key] = ok
    if not ok then
      problem(key, 'holds a ' .. found .. ', not a ' .. kind .. ': left alone')
    end
  end
  return ok
end

-- redis.pcall of a command on `key` that fails without effect when the key holds another type (a
-- read, a pop, a member write): its reply, or nil when the key holds something else than a `kind`
-- (reported in `problems` as usable() reports it, and left alone for the rest of the call). Saves
-- the TYPE a usable() check costs on every call. Any other error is raised.
local function try(kind, cmd, key, ...)
  if checked[key] == false then
    return nil
  end
  local reply = redis.pcall(cmd, key, ...)
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'WRONGTYPE', 1, true) then
      error(reply.err)
    end
    checked[key] = nil
    usable(key, kind) -- says what the key holds
    checked[key] = false
    return nil
  end
  return reply
end

local function own(key, kind)
  if not usable(key, kind) then
    redis.call('DEL', key)
    checked[key] = true
    problems[#problems] = {key, 'held garbage: replaced'}
  end
  return true
end

-- Whether the call declared `key` in KEYS. A script whose keys depend on data only Redis holds is
-- told the keys its caller read just before, and touches no other: where declared() says no, it
-- stops and says so. Every runtime caller declares its keys; a call that declares none at all (a
-- test driving a script by hand) is not limited.
local function declared(key)
  if #KEYS == 0 then
    return true
  end
  if not declared_keys then
    declared_keys = {}
    for _, k in ipairs(KEYS) do
      declared_keys[k] = true
    end
  end
  return declared_keys[key] == true
end

local function touch(queue)
  touched[queue] = (touched[queue] or 0) + 1
end

-- hint(q, id, ek): the job an enqueue just put in q's line (after its touch): named in q's signal,
-- with its effect key, if it is the one thing the call did to q, so that an idle worker claims it
-- without reading the head of q first (workers/stepkeys.py). hint(q, false, at): the enqueue
-- scheduled a job for `at` instead; the signal says when, and a worker waits until then rather
-- than stepping now to learn it (workers/listener.py)
local function hint(queue, id, ek)
  hints[queue] = {id, ek}
end

local function flush_touched()
  for queue, count in pairs(touched) do
    try('set', 'SADD', K.queues, K.queue .. queue)
    local named = count == 1 and hints[queue]
    if named and named[1] then
      try('stream', 'XADD', K.signal .. queue, 'MAXLEN', '1', '*', 'q', queue, 'id', named[1], 'ek', named[2])
    elseif named then
      try('stream', 'XADD', K.signal .. queue, 'MAXLEN', '1', '*', 'q', queue, 'due', string.format('%.6f', named[2]))
    else
      try('stream', 'XADD', K.signal .. queue, 'MAXLEN', '1', '*', 'q', queue)
    end
  end
  touched, hints = {}, {}
end

-- a member write: (cmd, key, member) for SADD/SREM/ZREM, (cmd, key, score, member) for ZADD
local GATHERED_KIND = {ZADD = 'zset', ZREM = 'zset', SADD = 'set', SREM = 'set'}

local function gather(cmd, key, a, b)
  if not gathering then
    if b == nil then
      try(GATHERED_KIND[cmd], cmd, key, a)
    else
      try(GATHERED_KIND[cmd], cmd, key, a, b)
    end
    return
  end
  local by_key = gathered[cmd]
  if not by_key then
    by_key = {}
    gathered[cmd] = by_key
  end
  local args = by_key[key]
  if not args then
    args = {}
    by_key[key] = args
    gathered_order[#gathered_order + 1] = {cmd, key, args}
  end
  args[#args + 1] = a
  if b ~= nil then
    args[#args + 1] = b
  end
end

local function flush_gathered()
  for _, entry in ipairs(gathered_order) do
    local cmd, key, args = entry[1], entry[2], entry[3]
    local per = (cmd == 'ZADD') and 2000 or 1000 -- score-member pairs stay together
    for first = 1, #args, per do
      try(GATHERED_KIND[cmd], cmd, key, unpack(args, first, math.min(first + per - 1, #args)))
    end
  end
  gathered, gathered_order = {}, {}
end

-- fn(...) under pcall; what it gathered goes out whether it succeeded or not, then its error is
-- raised again: a command that fails half-way through a call (out of memory, say) never leaves
-- jobs written as started or finished without their registry entries
local function guarded(fn, ...)
  local ok, a, b, c, d, e, f, g = pcall(fn, ...)
  flush_gathered()
  if not ok then
    error(a)
  end
  return a, b, c, d, e, f, g
end

local function push(queue, id, at_front)
  if at_front then
    redis.call('LPUSH', K.queue .. queue, id)
  else
    redis.call('RPUSH', K.queue .. queue, id)
  end
  touch(queue)
end

local SEQ_SPAN = 4294967296 -- 2^32 places per priority: FIFO among equal priorities

-- The prioritized set's score of a job: its priority, then its place among equals (`front`:
-- ahead of them all, for a job handed back or retried at once).
local function priority_score(queue, priority, front)
  if front then
    return priority * SEQ_SPAN
  end
  return priority * SEQ_SPAN + redis.call('INCR', K.priority_seq .. queue) % SEQ_SPAN
end

-- Put a job (back) in line: its queue's list, or its prioritized set if it has a priority.
local function requeue(queue, id, at_front)
  local priority = whole(redis.pcall('HGET', K.job .. id, 'priority'), 1, 2097152)
  if priority and usable(K.prioritized .. queue, 'zset') then
    redis.call('ZADD', K.prioritized .. queue, priority_score(queue, priority, at_front), id)
    touch(queue)
  else
    push(queue, id, at_front)
  end
end

local inflight_keys = {}

local function inflight_key(worker)
  local key = inflight_keys[worker]
  if not key then
    key = K.inflight .. worker .. K.inflight_suffix
    inflight_keys[worker] = key
  end
  return key
end

-- A queue's keys, built once per call: {list, scheduled, wip, finished, prioritized}
local queue_keys = {}

local function keys_of(queue)
  local qk = queue_keys[queue]
  if not qk then
    qk = {K.queue .. queue, K.scheduled .. queue, K.wip .. queue, K.finished .. queue, K.prioritized .. queue}
    queue_keys[queue] = qk
  end
  return qk
end

-- -- job lifecycle events (CHUMON_JOB_EVENTS, workers/events.py) ----------------------------------
-- emit(cap, event, id, queue, extra): append one entry {event, id, queue, extra k/v...} to the
-- stream K.job_events, trimmed to about `cap` entries. `cap` is false while events are off: nothing
-- is written and the call costs one comparison. Values are strings or numbers.
local function emit(cap, event, id, queue, extra)
  if not cap or not usable(K.job_events, 'stream') then
    return
  end
  local args = {'XADD', K.job_events, 'MAXLEN', '~', cap, '*', 'event', event, 'id', id, 'queue', queue}
  for _, value in ipairs(extra or {}) do
    args[#args + 1] = value
  end
  redis.call(unpack(args))
end

-- -- a call's start -------------------------------------------------------------------------------
-- A script's chunk (EVALSHA) runs every declaration above afresh on each call. The runtime's
-- function library (workers/scripts.py, Redis 7 and later) runs them once, when it is loaded, and
-- keeps them between calls: there each function calls begin() first, which resets every piece of
-- per-call state (each include registers its own with on_call) and decodes the keyspace only when
-- it differs from the last call's. Nothing may outlive a call but caches derived from the keyspace.
local RESETS = {}

local function on_call(reset)
  RESETS[#RESETS + 1] = reset
end

local KEYSPACES, KEYSPACE_COUNT = {}, 0 -- decoded keyspaces by their JSON, with their key caches

local function begin()
  local raw = ARGV[1]
  if raw ~= K_RAW then
    local entry = KEYSPACES[raw]
    if not entry then
      if KEYSPACE_COUNT >= 32 then
        KEYSPACES, KEYSPACE_COUNT = {}, 0
      end
      entry = {cjson.decode(raw), {}, {}}
      KEYSPACES[raw], KEYSPACE_COUNT = entry, KEYSPACE_COUNT + 1
    end
    K, inflight_keys, queue_keys, K_RAW = entry[1], entry[2], entry[3], raw
  end
  touched, hints, problems, checked, declared_keys = {}, {}, {}, {}, nil
  gathered, gathered_order, gathering = {}, {}, false
  NOW, NOW_ISO = nil, nil
  for i = 1, #RESETS do
    RESETS[i]()
  end
end

if ARGV then -- a script's chunk: its call starts here (in the library ARGV is nil until a call)
  begin()
end
