-- backlog-remove v2: takes a task out of the backlog; it ends cancelled (never silently gone).
-- ARGV[5] task id   ARGV[6] reason
-- Returns {0} · {E_NOT_IN_BACKLOG}
local tid, why = ARGV[5], ARGV[6]
if redis.call('LREM', key('backlog'), 1, tid) == 0 then return { E_NOT_IN_BACKLOG } end
local tkey = key('task', tid)
local state = redis.call('HGET', tkey, 'state')
if state == 'pending' then
  redis.call('HSET', tkey, 'error', why)
  set_task_state(tkey, tid, state, 'cancelled')
  emit({ type = 'backlog.removed', task_id = tid, message = why })
  emit({ type = 'task.cancelled', task_id = tid, message = why })
end
return { 0 }
