-- status v3 (read-only): the whole town in one round trip.
-- Returns {task counts (flat HGETALL), backlog length, {agent id, agent fields (flat), queue length}...,
--          usage totals (flat HGETALL)}
local agents = {}
for _, aid in ipairs(redis.call('SMEMBERS', key('idx:agents'))) do
  local fields = redis.call('HGETALL', key('agent', aid))
  if #fields > 0 then agents[#agents + 1] = { aid, fields, queue_len(aid) } end
end
return { redis.call('HGETALL', key('counts')), redis.call('LLEN', key('backlog')), agents, redis.call('HGETALL', key('usage')) }
