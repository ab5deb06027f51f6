-- settle-fenced v1: an agent completes or fails its own running task (a town tool its worker
-- serves), fenced like the worker's finish: only while the task is `running` under the fencing
-- token of the run the agent belongs to, and assigned to that agent. A task that was handed back,
-- reclaimed (a new claim, a new token), cancelled or settled meanwhile is not the agent's to
-- settle. The worker's own finish, when the run ends, is then superseded: the task keeps this
-- outcome, and finish still records the run's usage and session and frees the agent.
-- Like finish, a completion counts on the agent, answers a query's sender, and releases or
-- cancels the tasks waiting on it and may land its group (task_ended in lib.lua).
-- ARGV[5] agent id   ARGV[6] task id   ARGV[7] fencing token   ARGV[8] 'completed' | 'failed'
-- ARGV[9] result or error text   ARGV[10] id for a reply message (a query's answer)
-- Returns {0, outcome} · {0, 'repeat'} (the same settlement sent again) · {E_TASK_NOT_FOUND}
--         · {E_STALE_FENCE, state} · {E_INVALID_TRANSITION, state}
local aid, tid, fence, outcome, text, reply_id = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local tkey, akey = key('task', tid), key('agent', aid)
local t = redis.call('HMGET', tkey, 'state', 'fence', 'assigned_to', 'reply_to', 'group', 'dependants', 'settled_by_fence')
local state = t[1]
if not state then return { E_TASK_NOT_FOUND } end
if t[2] ~= fence or t[3] ~= aid then
  emit({ type = 'task.rejected', task_id = tid, agent_id = aid, message = 'agent settlement from a stale claim rejected', by = 'agent' })
  return { E_STALE_FENCE, state }
end
if state ~= 'running' then
  -- the same request again (a reply lost to a reconnect) is no error
  if t[7] == fence and state == outcome and redis.call('HGET', tkey, outcome == 'completed' and 'result' or 'error') == text then
    return { 0, 'repeat' }
  end
  return { E_INVALID_TRANSITION, state }
end

redis.call('HSET', tkey, 'settled_by_fence', fence)
if outcome == 'completed' then
  redis.call('HSET', tkey, 'result', text)
  redis.call('HDEL', tkey, 'error')
  set_task_state(tkey, tid, 'running', 'completed')
  redis.call('HINCRBY', akey, 'tasks_completed', 1)
  redis.call('HINCRBY', akey, 'rounds_completed', 1)
  emit({ type = 'task.completed', task_id = tid, agent_id = aid, message = 'task completed by its agent', by = 'agent' })
else
  redis.call('HSET', tkey, 'error', text)
  failed_result(tkey, text)
  set_task_state(tkey, tid, 'running', 'failed')
  redis.call('HINCRBY', akey, 'tasks_failed', 1)
  emit({ type = 'task.failed', task_id = tid, agent_id = aid, message = text, by = 'agent' })
end
if t[4] then rare().send_answer(t[4], aid, tid, reply_id, outcome == 'completed' and text or ('failed: ' .. text)) end
if t[5] or t[6] then task_ended(tid, outcome, t[5], t[6]) end
return { 0, outcome }
