-- status v4 (read-only): the whole town in one round trip.
-- Tinytown layout: foreign writers (`tt task complete`, `tt backlog claim`) change task states
-- without our per-state counters, so the states of the indexed tasks are counted instead (one
-- HGET per task within retention; the cluster layout reads its counters).
-- Returns {task counts (flat HGETALL), backlog length, {agent id, agent fields (flat), queue length}...,
--          usage totals (flat HGETALL)}
local agents = {}
for _, aid in ipairs(redis.call('SMEMBERS', key('idx:agents'))) do
  local fields = redis.call('HGETALL', key('agent', aid))
  if #fields > 0 then agents[#agents + 1] = { aid, fields, queue_len(aid) } end
end
local counts
if TT then
  local tally = {}
  for _, tid in ipairs(redis.call('ZRANGE', key('idx:tasks'), 0, -1)) do
    local state = redis.call('HGET', key('task', tid), 'state')
    if state then tally[state] = (tally[state] or 0) + 1 end
  end
  counts = {}
  for state, n in pairs(tally) do
    counts[#counts + 1] = state
    counts[#counts + 1] = n
  end
else
  counts = redis.call('HGETALL', key('counts'))
end
return { counts, redis.call('LLEN', key('backlog')), agents, redis.call('HGETALL', key('usage')) }
