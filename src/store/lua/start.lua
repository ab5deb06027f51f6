-- start v6: a worker moved one inbox entry into its processing list (BLMOVE); act on it.
-- Work (task_assign, task, query) starts: task → running, attempts + 1, a fencing token,
-- agent → working. Informational messages and acks move to the agent's notes; when such an
-- entry (or a discarded one) was the last, the agent settles: working → idle, draining → stopped.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] the raw entry   ARGV[8] max notes returned
-- Returns
--   {1, fence, task fields (flat HGETALL), notes (raw JSON list), the agent's last CLI session
--      id or ''}  work started; also the
--                       answer to a start run twice (ioredis re-sends a command whose reply was
--                       lost with its connection): the same claim again, nothing changed
--   {2, state}          agent paused/stopped/error: entry back at the head of the inbox
--   {3}                 entry discarded (unreadable, or its task was settled or moved)
--   {4}                 entry stored in the notes
--   {E_WORKER_LOST}     this worker no longer serves the agent: entry back in the inbox
local wid, aid, raw, max_notes = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local akey, plist, inbox = key('agent', aid), key('processing', wid), key('inbox', aid)

local function put_back()
  redis.call('LREM', plist, 1, raw)
  redis.call('LPUSH', inbox, raw)
end

-- The entry was consumed without starting work: settle the agent if nothing is left.
local function settle_if_empty(state)
  if redis.call('HGET', akey, 'current_task') or queue_len(aid) > 0 then return end
  if state == 'working' then
    set_agent_state(aid, 'idle', 'queue empty')
  elseif state == 'draining' then
    set_agent_state(aid, 'stopped', 'drained')
  end
end

local state = redis.call('HGET', akey, 'state')
if not state or redis.call('HGET', akey, 'worker_id') ~= wid then
  redis.call('LREM', plist, 1, raw)
  if state then redis.call('LPUSH', inbox, raw) end
  return { E_WORKER_LOST }
end

local msg = decode(raw)
local tid = msg and task_id_of(msg)
if tid then
  local current = redis.call('HMGET', key('task', tid), 'state', 'worker_id', 'fence')
  if current[1] == 'running' and current[2] == wid then
    return { 1, current[3], redis.call('HGETALL', key('task', tid)), redis.call('LRANGE', key('notes', aid), 0, max_notes - 1) }
  end
end

if state == 'paused' or state == 'stopped' or state == 'error' then
  put_back()
  return { 2, state }
end

if msg and not tid then
  redis.call('LREM', plist, 1, raw)
  redis.call('RPUSH', key('notes', aid), raw)
  redis.call('LTRIM', key('notes', aid), -100, -1)
  emit({ type = 'message.received', agent_id = aid, message = 'note stored', message_id = msg.id, kind = msg.type })
  settle_if_empty(state)
  return { 4 }
end

local tkey = tid and key('task', tid)
if tid and msg.type ~= 'task_assign' and redis.call('EXISTS', tkey) == 0 then
  -- a task or query sent as a message becomes a task now, answered to its sender on completion
  local text = msg.description or msg.question or ''
  local tags = msg.type == 'query' and '["query"]' or '[]'
  redis.call('HSET', tkey, 'id', tid, 'description', text, 'created_at', NOW, 'updated_at', NOW,
    'tags', tags, 'priority', msg.priority or 'normal', 'attempts', 0, 'max_attempts', 3,
    'assigned_to', aid)
  if msg.type == 'query' and type(msg.from) == 'string' then redis.call('HSET', tkey, 'reply_to', msg.from) end
  index_task(tid)
  set_task_state(tkey, tid, nil, 'assigned')
  emit({ type = 'task.created', task_id = tid, agent_id = aid, message = msg.type .. ' message became a task' })
end

local t = tid and redis.call('HMGET', tkey, 'state', 'assigned_to') or {}
if t[1] ~= 'assigned' or t[2] ~= aid then
  redis.call('LREM', plist, 1, raw)
  emit({ type = 'message.discarded', agent_id = aid, task_id = tid or nil, message = msg and 'task no longer assigned here' or 'unreadable inbox entry' })
  settle_if_empty(state)
  return { 3 }
end

local attempts = redis.call('HINCRBY', tkey, 'attempts', 1)
local fence = redis.call('INCR', key('seq:fence'))
redis.call('HSET', tkey, 'started_at', NOW, 'fence', fence, 'worker_id', wid)
redis.call('HDEL', tkey, 'error')
set_task_state(tkey, tid, 'assigned', 'running')
redis.call('HSET', akey, 'current_task', tid, 'last_active_at', NOW)
if state ~= 'draining' then set_agent_state(aid, 'working', 'task started') end
emit({ type = 'task.started', task_id = tid, agent_id = aid, message = 'task started', attempt = attempts })
return { 1, fence, redis.call('HGETALL', tkey), redis.call('LRANGE', key('notes', aid), 0, max_notes - 1),
  redis.call('HGET', akey, 'session_id') or '' }
