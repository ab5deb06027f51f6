-- progress v1: an agent reports how its running task is going (a town tool its worker serves):
-- a `task.progress` event with its line and, when given, a percentage. Fenced like finish: only
-- while the task is `running` under the fencing token of the agent's run, and assigned to it.
-- ARGV[5] agent id   ARGV[6] task id   ARGV[7] fencing token   ARGV[8] the agent's line
-- ARGV[9] percent, 0-100 ('' = none)
-- Returns {0} · {E_TASK_NOT_FOUND} · {E_STALE_FENCE, state}
local aid, tid, fence, line, percent = ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local t = redis.call('HMGET', key('task', tid), 'state', 'fence', 'assigned_to')
if not t[1] then return { E_TASK_NOT_FOUND } end
if t[1] ~= 'running' or t[2] ~= fence or t[3] ~= aid then return { E_STALE_FENCE, t[1] } end
emit({ type = 'task.progress', task_id = tid, agent_id = aid, message = line, percent = percent })
return { 0 }
