-- backlog-auto-claim v2: an idle agent with claim_backlog takes the oldest backlog task whose
-- tags are empty or meet the agent's role or tags. Atomic: racing agents never share a task.
-- ARGV[5] agent id   ARGV[6] message id for the task_assign   ARGV[7] how many backlog entries to scan
-- Returns {1, task id} claimed · {0} nothing to claim
local aid, mid, scan = ARGV[5], ARGV[6], tonumber(ARGV[7])
local akey = key('agent', aid)
local a = redis.call('HMGET', akey, 'state', 'claim_backlog', 'role_id', 'tags', 'current_task')
if a[2] ~= '1' or (a[1] ~= 'idle' and a[1] ~= 'working') or a[5] or queue_len(aid) > 0 then return { 0 } end

local wants = {}
if a[3] then wants[a[3]] = true end
local ok, agent_tags = pcall(cjson.decode, a[4] or '[]')
if ok and type(agent_tags) == 'table' then for _, tag in ipairs(agent_tags) do wants[tag] = true end end

local function matches(tags_json)
  local ok2, tags = pcall(cjson.decode, tags_json or '[]')
  if not ok2 or type(tags) ~= 'table' or #tags == 0 then return true end
  for _, tag in ipairs(tags) do if wants[tag] then return true end end
  return false
end

for _, tid in ipairs(redis.call('LRANGE', key('backlog'), 0, scan - 1)) do
  local tkey = key('task', tid)
  local t = redis.call('HMGET', tkey, 'state', 'tags', 'priority')
  if t[1] == 'pending' and matches(t[2]) then
    redis.call('LREM', key('backlog'), 1, tid)
    local message = '{"id":' .. cjson.encode(mid) .. ',"from":"' .. SUPERVISOR .. '","to":' .. cjson.encode(aid) ..
      ',"type":"task_assign","task_id":' .. cjson.encode(tid) .. ',"priority":' .. cjson.encode(t[3] or 'normal') ..
      ',"created_at":' .. cjson.encode(NOW) .. ',"correlation_id":null}'
    redis.call('HSET', tkey, 'assigned_to', aid, 'message', message)
    set_task_state(tkey, tid, 'pending', 'assigned')
    enqueue(key('inbox', aid), message)
    emit({ type = 'backlog.claimed', task_id = tid, agent_id = aid, message = 'backlog task claimed', auto = true })
    emit({ type = 'task.assigned', task_id = tid, agent_id = aid, message = 'task assigned' })
    return { 1, tid }
  end
end
return { 0 }
