-- status v5 (read-only): the whole town in one round trip.
-- Tinytown layout: foreign writers (`tt task complete`, `tt backlog claim`) change task states
-- without our per-state counters, so the states of the indexed tasks are counted instead (one
-- HGET per task within retention; the cluster layout reads its counters).
-- The agents come as one JSON text: a thousand agents as tens of thousands of reply elements
-- cost the client far more to parse than one JSON.parse.
-- ARGV[5…] the agent fields to read
-- Returns {task counts (flat HGETALL), backlog length,
--          JSON [[agent id, [its values of ARGV[5…], false where absent], queue length], ...],
--          usage totals (flat HGETALL)}
local fields = { unpack(ARGV, 5) }
local agents = {}
for _, aid in ipairs(redis.call('SMEMBERS', key('idx:agents'))) do
  local values = redis.call('HMGET', key('agent', aid), unpack(fields))
  for _, value in ipairs(values) do
    if value then
      agents[#agents + 1] = { aid, values, queue_len(aid) }
      break
    end
  end
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
-- (cjson writes an empty table as {})
return { counts, redis.call('LLEN', key('backlog')), #agents > 0 and cjson.encode(agents) or '[]', redis.call('HGETALL', key('usage')) }
