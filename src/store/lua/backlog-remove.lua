-- backlog-remove v3: takes a task out of the backlog; it ends cancelled (never silently gone),
-- and its dependants and group hear of it (task_ended in lib.lua).
-- ARGV[5] task id   ARGV[6] reason
-- Returns {0} · {E_NOT_IN_BACKLOG}
local tid, why = ARGV[5], ARGV[6]
if redis.call('LREM', key('backlog'), 1, tid) == 0 then return { E_NOT_IN_BACKLOG } end
local tkey = key('task', tid)
local t = redis.call('HMGET', tkey, 'state', 'group', 'dependants')
if t[1] == 'pending' then
  redis.call('HSET', tkey, 'error', why)
  set_task_state(tkey, tid, t[1], 'cancelled')
  emit({ type = 'backlog.removed', task_id = tid, message = why })
  emit({ type = 'task.cancelled', task_id = tid, message = why })
  if t[2] or t[3] then task_ended(tid, 'cancelled', t[2], t[3]) end
end
return { 0 }
