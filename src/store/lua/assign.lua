-- assign v7: creates a task and, in the same step, delivers it to an agent's inbox or to the
-- backlog. A task record never exists without its queue entry, nor the reverse. Run twice with
-- the same task id (ioredis re-sends a command whose reply was lost with its connection), the
-- second run changes nothing.
-- ARGV[5] task id            ARGV[6] agent id ('' = backlog)   ARGV[7] description
-- ARGV[8] tags (JSON array)  ARGV[9] priority   ARGV[10] max attempts ('' = the agent's default, else 3)
-- ARGV[11] timeout ms ('' = none)   ARGV[12] parent id ('' = none)
-- ARGV[13] task_assign message JSON (agent only), queued by its priority
-- Returns {0, max attempts} · {E_AGENT_NOT_FOUND}
local tid, aid, description, tags, priority = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local max_attempts, timeout_ms, parent_id, message = ARGV[10], ARGV[11], ARGV[12], ARGV[13]

if aid ~= '' and redis.call('HEXISTS', key('agent', aid), 'state') == 0 then return { E_AGENT_NOT_FOUND } end
if max_attempts == '' then
  max_attempts = (aid ~= '' and redis.call('HGET', key('agent', aid), 'max_attempts')) or '3'
end

local tkey = key('task', tid)
if redis.call('EXISTS', tkey) == 1 then return { 0, tonumber(redis.call('HGET', tkey, 'max_attempts')) or 3 } end
redis.call('HSET', tkey, 'id', tid, 'description', description, 'created_at', NOW, 'updated_at', NOW, 'tags', tags)
-- Defaults stay implicit (absent = normal priority, 0 attempts, 3 max): a queued task is small.
if priority ~= 'normal' then redis.call('HSET', tkey, 'priority', priority) end
if max_attempts ~= '3' then redis.call('HSET', tkey, 'max_attempts', max_attempts) end
if timeout_ms ~= '' then redis.call('HSET', tkey, 'timeout_ms', timeout_ms) end
if parent_id ~= '' then redis.call('HSET', tkey, 'parent_id', parent_id) end
index_task(tid)

if aid == '' then
  set_task_state(tkey, tid, nil, 'pending')
  redis.call('RPUSH', key('backlog'), tid)
  emit({ type = 'task.created', task_id = tid, message = 'task created' })
  emit({ type = 'backlog.added', task_id = tid, message = 'task added to the backlog' })
  return { 0, tonumber(max_attempts) }
end

redis.call('HSET', tkey, 'assigned_to', aid)
set_task_state(tkey, tid, nil, 'assigned')
enqueue(key('inbox', aid), message)
emit({ type = 'task.created', task_id = tid, agent_id = aid, message = 'task created' })
emit({ type = 'task.assigned', task_id = tid, agent_id = aid, message = 'task assigned' })
return { 0, tonumber(max_attempts) }
