-- assign v8: creates a task and, in the same step, delivers it to an agent's inbox or to the
-- backlog. A task record never exists without its queue entry, nor the reverse. Run twice with
-- the same task id (ioredis re-sends a command whose reply was lost with its connection), the
-- second run changes nothing.
-- With dependencies, the task is held instead (state `pending`, in no queue) until the last of
-- them completes (task_ended in lib.lua releases it); a dependency over already counts as met
-- when completed, and otherwise cancels the task at once unless it runs anyway ('run'). Every
-- dependency must exist when the task is created, so no cycle can ever form.
-- ARGV[5] task id            ARGV[6] agent id ('' = backlog)   ARGV[7] description
-- ARGV[8] tags (JSON array)  ARGV[9] priority   ARGV[10] max attempts ('' = the agent's default, else 3)
-- ARGV[11] timeout ms ('' = none)   ARGV[12] parent id ('' = none)
-- ARGV[13] task_assign message JSON (agent only), queued by its priority
-- ARGV[14] group name ('' = none)   ARGV[15] dependencies (JSON array of task ids, '' = none)
-- ARGV[16] on a failed or cancelled dependency: '' = cancel, 'run'
-- ARGV[17] the task's maxCostUsd ('' = none)   ARGV[18] its maxTokens ('' = none)
-- Returns {0, max attempts, state, error or ''} · {E_AGENT_NOT_FOUND}
--         · {E_INVALID_DEPENDENCY, task id, 'unknown' | 'self'}
local tid, aid, description, tags, priority = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local max_attempts, timeout_ms, parent_id, message = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
-- (absent coordination arguments mean none: callers that predate them still work)
local group, depends_on, on_dep_failure = ARGV[14] or '', ARGV[15] or '', ARGV[16] or ''
local max_cost, max_tokens = ARGV[17] or '', ARGV[18] or ''

local agent = aid ~= '' and redis.call('HMGET', key('agent', aid), 'state', 'max_attempts') or {}
if aid ~= '' and not agent[1] then return { E_AGENT_NOT_FOUND } end
if max_attempts == '' then
  max_attempts = agent[2] or '3'
end

local tkey = key('task', tid)
if redis.call('EXISTS', tkey) == 1 then
  local t = redis.call('HMGET', tkey, 'max_attempts', 'state', 'error')
  return { 0, tonumber(t[1]) or 3, t[2], t[3] or '' }
end

-- Dependencies, checked before anything is written: each exists (and is not this task).
local deps, waiting, failed_dep = {}, {}, nil
if depends_on ~= '' then
  deps = cjson.decode(depends_on)
  for _, dep in ipairs(deps) do
    if dep == tid then return { E_INVALID_DEPENDENCY, dep, 'self' } end
    local d = redis.call('HMGET', key('task', dep), 'state', 'error')
    if not d[1] then return { E_INVALID_DEPENDENCY, dep, 'unknown' } end
    if not is_terminal(d[1]) then
      waiting[#waiting + 1] = dep
    elseif d[1] ~= 'completed' and on_dep_failure ~= 'run' and not failed_dep then
      failed_dep = 'dependency ' .. dep .. ' ' .. d[1] .. (d[2] and (': ' .. clip(d[2], 300)) or '')
    end
  end
end

redis.call('HSET', tkey, 'id', tid, 'description', description, 'created_at', NOW, 'updated_at', NOW, 'tags', tags)
-- Defaults stay implicit (absent = normal priority, 0 attempts, 3 max): a queued task is small.
if priority ~= 'normal' then redis.call('HSET', tkey, 'priority', priority) end
if max_attempts ~= '3' then redis.call('HSET', tkey, 'max_attempts', max_attempts) end
if timeout_ms ~= '' then redis.call('HSET', tkey, 'timeout_ms', timeout_ms) end
if parent_id ~= '' then redis.call('HSET', tkey, 'parent_id', parent_id) end
if max_cost ~= '' then redis.call('HSET', tkey, 'max_cost_usd', max_cost) end
if max_tokens ~= '' then redis.call('HSET', tkey, 'max_tokens', max_tokens) end
if depends_on ~= '' then redis.call('HSET', tkey, 'depends_on', depends_on) end
if on_dep_failure ~= '' then redis.call('HSET', tkey, 'on_dep_failure', on_dep_failure) end
index_task(tid)

local state
if failed_dep then
  -- a dependency failed already: the task ends at once, cancelled with the reason
  state = 'cancelled'
  redis.call('HSET', tkey, 'error', failed_dep)
  set_task_state(tkey, tid, nil, 'cancelled')
  emit({ type = 'task.created', task_id = tid, message = 'task created' })
  emit({ type = 'task.cancelled', task_id = tid, message = failed_dep, reason = 'dependency' })
elseif #waiting > 0 then
  -- held: in no queue until its last dependency completes
  state = 'pending'
  redis.call('HSET', tkey, 'waiting_on', #waiting)
  if aid ~= '' then redis.call('HSET', tkey, 'held_for', aid, 'held_entry', message) end
  for _, dep in ipairs(waiting) do
    redis.call('RPUSH', key('dependants', dep), tid)
    redis.call('HSET', key('task', dep), 'dependants', '1')
  end
  set_task_state(tkey, tid, nil, 'pending')
  emit({ type = 'task.created', task_id = tid, agent_id = aid ~= '' and aid or nil, message = 'task created, waiting on ' .. #waiting .. ' dependencies', waiting_on = #waiting })
elseif aid == '' then
  state = 'pending'
  set_task_state(tkey, tid, nil, 'pending')
  redis.call('RPUSH', key('backlog'), tid)
  emit({ type = 'task.created', task_id = tid, message = 'task created' })
  emit({ type = 'backlog.added', task_id = tid, message = 'task added to the backlog' })
else
  state = 'assigned'
  set_task_state(tkey, tid, nil, 'assigned', 'assigned_to', aid)
  -- Events before the entry: Redis answers the blocked clients in the order their keys were
  -- written and sends the last answered first, so the worker's BLMOVE reply leaves before the
  -- event readers' XREAD replies and its start is not held up by their parsing.
  emit({ type = 'task.created', task_id = tid, agent_id = aid, message = 'task created' })
  emit({ type = 'task.assigned', task_id = tid, agent_id = aid, message = 'task assigned' })
  enqueue(key('inbox', aid), message)
end
if group ~= '' then coord().group_join(group, tid, state) end
return { 0, tonumber(max_attempts), state, failed_dep or '' }
