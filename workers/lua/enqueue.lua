--[[
  enqueue: write jobs and put each on its queue, or in its queue's scheduled registry.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {jobs = {<job as enqueue_job() takes>, ...}}   (at most 1,000 jobs:
             workers/enqueue.py sends bigger batches in chunks, so no call holds Redis long)

  Output:
    {ids, problems}
      ids       one entry per planned job, in order: the new id; for a job whose producer
                idempotency key was already used within its TTL, the id of the job that key
                enqueued (and nothing is written for it); false where the queue's keys hold
                something else than a queue (nothing written for that job)
      problems  {key, what} of keys that hold garbage (see includes/common.lua)

  Events:
    one entry on the signal stream of each queue that got work
]]
--- @include "common"
--- @include "enqueue_job"

local plan = cjson.decode(ARGV[2])
local ids = {}
for i, job in ipairs(plan.jobs) do
  ids[i] = enqueue_job(job)
end
flush_touched()
return {ids, problems}
