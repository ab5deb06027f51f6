-- backlog-claim v4: moves a backlog task to an agent's inbox. Two claimers of one task: one wins.
-- ARGV[5] task id   ARGV[6] agent id   ARGV[7] task_assign message JSON (queued by its priority)
-- Returns {0} · {E_AGENT_NOT_FOUND} · {E_NOT_IN_BACKLOG}
local tid, aid, message = ARGV[5], ARGV[6], ARGV[7]
if redis.call('HEXISTS', key('agent', aid), 'state') == 0 then return { E_AGENT_NOT_FOUND } end
if redis.call('LREM', key('backlog'), 1, tid) == 0 then return { E_NOT_IN_BACKLOG } end
local tkey = key('task', tid)
local state = redis.call('HGET', tkey, 'state')
if state ~= 'pending' then return { E_NOT_IN_BACKLOG } end -- a stray id: it is gone now
redis.call('HSET', tkey, 'assigned_to', aid)
set_task_state(tkey, tid, 'pending', 'assigned')
enqueue(key('inbox', aid), message)
emit({ type = 'backlog.claimed', task_id = tid, agent_id = aid, message = 'backlog task claimed' })
emit({ type = 'task.assigned', task_id = tid, agent_id = aid, message = 'task assigned' })
return { 0 }
