-- settle v6: external control of a task: cancel, complete or fail it, whatever its state.
-- Queued entries are removed; a running task is settled here and its worker's later result is
-- superseded (the worker hears task.cancelled and stops the process). A task held by its
-- dependencies leaves its hold. Its end releases or cancels the tasks waiting on it and may
-- land its group (task_ended in lib.lua).
-- ARGV[5] task id   ARGV[6] 'cancelled' | 'completed' | 'failed'   ARGV[7] result, error or reason
-- Returns {0, previous state} · {E_TASK_NOT_FOUND} · {E_INVALID_TRANSITION, state}
local tid, outcome, text = ARGV[5], ARGV[6], ARGV[7]
local tkey = key('task', tid)
local t = redis.call('HMGET', tkey, 'state', 'assigned_to', 'group', 'dependants', 'waiting_on')
local state, aid = t[1], t[2]
if not state then return { E_TASK_NOT_FOUND } end
if is_terminal(state) then
  -- the same request again (a reply lost to a reconnect, or a repeated call) is no error
  local said = redis.call('HGET', tkey, outcome == 'completed' and 'result' or 'error')
  if state == outcome and said == text then return { 0, state } end
  return { E_INVALID_TRANSITION, state }
end

if state == 'pending' then
  if t[5] then
    redis.call('HDEL', tkey, 'waiting_on', 'held_for', 'held_entry')
  else
    redis.call('LREM', key('backlog'), 1, tid)
  end
end
if state == 'assigned' and aid then
  for _, list in ipairs({ key('inbox', aid), key('urgent', aid) }) do
    local entry = rare().find_entry(list, tid)
    if entry then redis.call('LREM', list, 1, entry) end
  end
end
if outcome == 'completed' then
  redis.call('HSET', tkey, 'result', text)
else
  redis.call('HSET', tkey, 'error', text)
  if outcome == 'failed' then failed_result(tkey, text) end
end
set_task_state(tkey, tid, state, outcome)
emit({ type = 'task.' .. outcome, task_id = tid, agent_id = aid or nil, message = text, external = true, previous = state })
if t[3] or t[4] then task_ended(tid, outcome, t[3], t[4]) end
if state == 'assigned' and aid then
  local astate = redis.call('HGET', key('agent', aid), 'state')
  if astate == 'draining' and queue_len(aid) == 0 and rare().claimed_len(aid) == 0
    and not redis.call('HGET', key('agent', aid), 'current_task') then
    set_agent_state(aid, 'stopped', 'drained')
  end
end
return { 0, state }
