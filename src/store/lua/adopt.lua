-- adopt v1: lists in this town's indexes the agents and tasks another writer created (tinytown
-- layout: `tt spawn`, `tt assign`, `tt backlog add` write hashes and nothing else), so agents(),
-- status(), tasks(), the name lookup and runWorker() see them. The caller finds them by SCAN;
-- here each is listed only if its hash (still) exists and it is not listed yet: running it
-- again changes nothing. Terminal tasks join the retention index, like ours.
-- ARGV[5] JSON {"agents": [id, ...], "tasks": [[id, completion ms or null], ...]}, tasks oldest
--         first (their creation order in the index)
-- Returns {agents listed, tasks listed}
local found = cjson.decode(ARGV[5])
local agents, tasks = 0, 0
for _, aid in ipairs(found.agents) do
  local akey = key('agent', aid)
  if redis.call('SISMEMBER', key('idx:agents'), aid) == 0 and redis.call('HEXISTS', akey, 'state') == 1 then
    redis.call('SADD', key('idx:agents'), aid)
    local name = redis.call('HGET', akey, 'name')
    if name then
      -- a name already held by a live agent keeps pointing there (find this one by id)
      local holder = redis.call('HGET', key('idx:names'), name)
      if not holder or redis.call('EXISTS', key('agent', holder)) == 0 then redis.call('HSET', key('idx:names'), name, aid) end
    end
    agents = agents + 1
  end
end
for _, entry in ipairs(found.tasks) do
  local tid, done_ms = entry[1], tonumber(entry[2])
  local state = redis.call('HGET', key('task', tid), 'state')
  if state and not redis.call('ZSCORE', key('idx:tasks'), tid) then
    index_task(tid)
    redis.call('HINCRBY', key('counts'), state, 1)
    if is_terminal(state) then redis.call('ZADD', key('idx:done'), done_ms or NOW_MS, tid) end
    tasks = tasks + 1
  end
end
return { agents, tasks }
