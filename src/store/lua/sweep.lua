-- sweep v4: hands back the work of workers whose lease expired (killed, frozen, cut off) and
-- expires terminal tasks past retention. Callers guard it so one sweep runs per interval.
-- A reclaimed task goes to its agent when the agent has another live worker, else to the
-- backlog, counting the lost attempt; past max_attempts it fails with the reason.
-- Tinytown layout: also finds tasks a foreign writer settled while no worker of ours ran them
-- (`tt task complete` on a queued task), indexes them for retention and announces them, so
-- waits wake within a sweep interval: the open tasks (listed, not in the retention index) are
-- looked at, one HGET each.
-- A task failed here (past max_attempts) releases or cancels its dependants and may land its
-- group (task_ended in lib.lua); an expired task leaves its group (an emptied group is deleted).
-- ARGV[5] retention ms   ARGV[6] max tasks expired per sweep
-- Returns {workers reclaimed, tasks expired}
local retention, batch = tonumber(ARGV[5]), tonumber(ARGV[6])
local lost = 0
local workers = redis.call('HGETALL', key('workers'))
for i = 1, #workers, 2 do
  local wid, aid = workers[i], workers[i + 1]
  if redis.call('EXISTS', key('lease', wid)) == 0 then
    local akey = key('agent', aid)
    local was_current = redis.call('HGET', akey, 'worker_id') == wid
    rare().release_worker(wid, 'reclaim', rare().has_live_worker(aid, wid), 'worker lost: lease expired')
    if was_current then
      local state = redis.call('HGET', akey, 'state')
      if state and state ~= 'stopped' then
        redis.call('HSET', akey, 'error', 'worker ' .. wid .. ' lost: its lease expired')
        set_agent_state(aid, 'error', 'worker lost')
      end
    end
    lost = lost + 1
  end
end

if TT then
  for _, tid in ipairs(redis.call('ZDIFF', 2, key('idx:tasks'), key('idx:done'))) do
    local t = redis.call('HMGET', key('task', tid), 'state', 'assigned_to')
    if t[1] then rare().foreign_settlement(tid, t[1], t[2]) end
  end
end

local expired = redis.call('ZRANGEBYSCORE', key('idx:done'), '-inf', NOW_MS - retention, 'LIMIT', 0, batch)
for _, tid in ipairs(expired) do
  local tkey = key('task', tid)
  local t = redis.call('HMGET', tkey, 'state', 'group')
  if t[1] then redis.call('HINCRBY', key('counts'), t[1], -1) end
  if t[2] then
    redis.call('ZREM', key('group-tasks', t[2]), tid)
    if redis.call('EXISTS', key('group-tasks', t[2])) == 0 then redis.call('DEL', key('group', t[2])) end
  end
  redis.call('DEL', tkey)
  redis.call('ZREM', key('idx:tasks'), tid)
  redis.call('ZREM', key('idx:done'), tid)
end
return { lost, #expired }
