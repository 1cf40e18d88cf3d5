--[[
  The liveness grace, shared by every script that judges whether a worker is alive.

  K.liveness holds last_beat (the server time of the last heartbeat of any worker) and
  grace_until. When nobody heartbeated for `stall_gap` seconds, Redis itself (or every worker)
  was stopped, frozen or restarted: every worker looks silent, but they may all be alive. So
  the first script to notice the gap, a heartbeat or a recovery scan, opens a grace of `grace`
  seconds during which nothing presumes a worker dead; only a heartbeat moves last_beat.

  grace_holds(stall_gap, grace)  whether the grace holds now (opening it if the gap is there)
  beat_liveness(stall_gap, grace)  a heartbeat: the same check, then last_beat = now()
]]

local function grace_holds(stall_gap, grace)
  own(K.liveness, 'hash')
  own(K.live_workers, 'zset')
  local f = redis.call('HMGET', K.liveness, 'last_beat', 'grace_until')
  local last, until_ = tonumber(f[1]), tonumber(f[2])
  if last and now() - last > stall_gap and not (until_ and until_ > last) then
    until_ = now() + grace
    redis.call('HSET', K.liveness, 'grace_until', until_)
  end
  return until_ ~= nil and now() < until_
end

local function beat_liveness(stall_gap, grace)
  grace_holds(stall_gap, grace)
  redis.call('HSET', K.liveness, 'last_beat', now())
end
