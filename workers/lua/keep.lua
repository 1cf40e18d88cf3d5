--[[
  keep: trim the kept jobs of job types that keep only their last N or those younger than an
  age (includes/retention.lua), without settling anything: ages pass while no job settles.
  Run by the minute-by-minute housekeeping (workers/maintenance.py).

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {kept = {{job type, 'completed'|'failed', count|false, age|false}, ...}}
  KEYS: each kept set, and the keys of its oldest jobs and their queues' registries, read just
        before (workers/maintenance.py): the trim stops at a job it was not told of

  Output:
    the number of dead letters removed (each call removes at most 100 jobs per type)

  Events:
    none
]]
--- @include "common"
--- @include "retention"

local plan = cjson.decode(ARGV[2])
local removed = 0
for _, item in ipairs(plan.kept) do
  removed = removed + trim_kept(item[2], item[1], item[3], item[4])
end
return removed
