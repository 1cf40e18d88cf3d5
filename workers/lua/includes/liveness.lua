--[[
  The liveness grace, shared by every script that judges whether a worker is alive.

  K.liveness holds last_beat (the server time of the last heartbeat of any worker),
  grace_until and grace_from. When nobody heartbeated for `stall_gap` seconds, Redis itself
  (or every worker) was stopped, frozen or restarted: every worker looks silent, but they may
  all be alive. So the first script to notice the gap, a heartbeat or a recovery scan, opens a
  grace of `grace` seconds during which no worker that was alive when the silence began is
  presumed dead. A worker already silent before the silence began (it beat last more than
  `slack` seconds before everyone stopped) is not protected: its death has nothing to do with
  the outage, and its runs are recovered on time. The liveness set being replaced (it held
  garbage) opens a grace too. Only a heartbeat moves last_beat.

  grace_since(p)         nil when no grace holds, else the time the silence began
  beat_liveness(p)       a heartbeat: the same check, then last_beat = now()
  presumed_dead(score, p, since)
                         whether a worker whose liveness score is `score` (nil: absent) is dead
                         now, given grace_since's answer

  p = {ttl, stall_gap, grace, slack}
]]

local function grace_since(p)
  local replaced = not usable(K.live_workers, 'zset') or not usable(K.liveness, 'hash')
  own(K.live_workers, 'zset')
  own(K.liveness, 'hash')
  local f = redis.call('HMGET', K.liveness, 'last_beat', 'grace_until', 'grace_from')
  local last, until_, from = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if replaced or (last and now() - last > p.stall_gap and not (until_ and until_ > last)) then
    until_, from = now() + p.grace, last or now()
    redis.call('HSET', K.liveness, 'grace_until', until_, 'grace_from', from)
  end
  if until_ and now() < until_ then
    return from or now()
  end
  return nil
end

local function beat_liveness(p)
  grace_since(p)
  redis.call('HSET', K.liveness, 'last_beat', now())
end

local function presumed_dead(score, p, since)
  if score and score >= now() - p.ttl then
    return false
  end
  if not since then
    return true
  end
  return score ~= nil and score < since - p.slack
end
