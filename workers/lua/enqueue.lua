--[[
  enqueue: write jobs and put each on its queue, or in its queue's scheduled registry.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {now = <unix time>, jobs = {<job as enqueue_job() takes>, ...}}

  Output:
    one job id per planned job, in order: the new id, or for a job whose producer
    idempotency key was already used within its TTL, the id of the job that key enqueued
    (and nothing is written for it)

  Events:
    one entry on the signal stream of each queue that got work
]]
--- @include "common"
--- @include "enqueue_job"

local plan = cjson.decode(ARGV[2])
local ids = {}
for i, job in ipairs(plan.jobs) do
  ids[i] = enqueue_job(job, plan.now)
end
flush_touched()
return ids
