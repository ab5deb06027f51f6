-- send v1: delivers one message to an agent's (or the supervisor's) inbox and records it.
-- ARGV[5] recipient id   ARGV[6] message JSON   ARGV[7] '1' = inbox head
-- ARGV[8] message id     ARGV[9] type         ARGV[10] sender id
-- Returns {0} · {E_AGENT_NOT_FOUND}
local to, json, expedite, mid, kind, from = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if to ~= SUPERVISOR and redis.call('HEXISTS', key('agent', to), 'state') == 0 then return { E_AGENT_NOT_FOUND } end
if expedite == '1' then redis.call('LPUSH', key('inbox', to), json) else redis.call('RPUSH', key('inbox', to), json) end
emit({ type = 'message.sent', agent_id = to, message = kind .. ' message sent', message_id = mid, from = from, to = to, kind = kind })
return { 0 }
