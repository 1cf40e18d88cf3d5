--[[
  flow: create a flow (a tree of jobs) at once: every parent waits, deferred, for its children;
  every leaf is queued (or scheduled) on its own queue. All of it or nothing.

  Input:
    ARGV[1]  keyspace (JSON, workers/keys.py)
    ARGV[2]  plan (JSON): {nodes = {node, ...}} in pre-order, the root first (at most 1,000 nodes:
             workers/flows.py), each node a job as enqueue_job() takes it (includes/enqueue_job.lua)
             plus `children`, the ids of its children (empty for a leaf); a child's `fields` carry
             flow_parent and flow_policy

  Output:
    {created, problems}
      created   1: the flow was written; 0: a job with the root's id exists already (the same flow
                id twice creates the flow once), nothing written; -1: some other node's id is taken
                by an existing job, or a queue's keys hold garbage, nothing written
      problems  {key, what} of keys that hold garbage (see includes/common.lua)

  Events:
    one entry on the signal stream of each queue that got a leaf
]]
--- @include "common"
--- @include "enqueue_job"

local plan = cjson.decode(ARGV[2])
local nodes = plan.nodes
if redis.call('EXISTS', K.job .. nodes[1].id) == 1 then
  return {0, problems}
end
-- every check before the first write
for _, node in ipairs(nodes) do
  local q = node.queue
  if redis.call('EXISTS', K.job .. node.id) == 1 then
    problem(K.job .. node.id, 'a job of this id exists: the flow was not created')
    return {-1, problems}
  end
  if not (usable(K.queue .. q, 'list') and usable(K.scheduled .. q, 'zset')
      and usable(K.prioritized .. q, 'zset') and usable(K.deferred .. q, 'zset')) then
    return {-1, problems}
  end
end

local stamp = now_iso()
for _, node in ipairs(nodes) do
  if #node.children == 0 then
    enqueue_job(node)
  else
    local base = K.flow .. node.id
    redis.call('DEL', base .. ':children', base .. ':pending', base .. ':results')
    local fields = node.fields
    for _, pair in ipairs({{'created_at', stamp}, {'status', 'deferred'}, {'flow', '1'}}) do
      fields[#fields + 1] = pair[1]
      fields[#fields + 1] = pair[2]
    end
    redis.call('HSET', K.job .. node.id, unpack(fields))
    redis.call('ZADD', K.deferred .. node.queue, now(), node.id) -- scored by creation time, as rq does
    redis.call('RPUSH', base .. ':children', unpack(node.children))
    redis.call('SADD', base .. ':pending', unpack(node.children))
    if usable(K.queues, 'set') then
      redis.call('SADD', K.queues, K.queue .. node.queue)
    end
  end
end
flush_touched()
return {1, problems}
