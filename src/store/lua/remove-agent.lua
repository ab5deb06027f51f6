-- remove-agent v5: deletes an agent. Its queued and claimed work goes to the backlog (never
-- silently dropped); notes and other messages go with it. Refused while a worker serves it.
-- Tasks held for it by their dependencies go to the backlog when released (release_held).
-- ARGV[5] agent id
-- Returns {0, tasks moved to the backlog} · {E_AGENT_NOT_FOUND} · {E_WORKER_ACTIVE, worker id}
local aid = ARGV[5]
local akey = key('agent', aid)
local a = redis.call('HMGET', akey, 'state', 'name', 'worker_id')
if not a[1] then return { E_AGENT_NOT_FOUND } end
local wid = a[3]
if wid then
  if redis.call('EXISTS', key('lease', wid)) == 1 then return { E_WORKER_ACTIVE, wid } end
  rare().release_worker(wid, 'reclaim', false, 'agent removed')
end

local moved = 0
local function to_backlog(raw)
  local msg = decode(raw)
  local tid = msg and task_id_of(msg)
  if not tid then return end
  local tkey = key('task', tid)
  local state = redis.call('HGET', tkey, 'state')
  if msg.type ~= 'task_assign' and not state then
    -- a task or query message never claimed: keep the work as a backlog task
    local text = msg.description or msg.question or ''
    redis.call('HSET', tkey, 'id', tid, 'description', text, 'created_at', NOW, 'updated_at', NOW,
      'tags', '[]', 'priority', msg.priority or 'normal', 'attempts', 0, 'max_attempts', 3)
    index_task(tid)
    set_task_state(tkey, tid, nil, 'pending')
  elseif state == 'assigned' then
    redis.call('HDEL', tkey, 'assigned_to')
    set_task_state(tkey, tid, state, 'pending')
  else
    return
  end
  redis.call('RPUSH', key('backlog'), tid)
  emit({ type = 'backlog.added', task_id = tid, agent_id = aid, message = 'queued work of a removed agent' })
  moved = moved + 1
end
for _, list in ipairs({ key('urgent', aid), key('inbox', aid) }) do
  for _, raw in ipairs(redis.call('LRANGE', list, 0, -1)) do to_backlog(raw) end
end

redis.call('DEL', akey, key('inbox', aid), key('urgent', aid), key('notes', aid))
redis.call('SREM', key('idx:agents'), aid)
if redis.call('HGET', key('idx:names'), a[2]) == aid then redis.call('HDEL', key('idx:names'), a[2]) end
emit({ type = 'agent.removed', agent_id = aid, message = 'agent ' .. a[2] .. ' removed', moved = moved })
-- and the Rust CLI's per-agent keys (after the event, which would recreate the agent's stream)
if TT then redis.call('DEL', key('stop', aid), key('activity', aid), key('events:agent', aid)) end
return { 0, moved }
