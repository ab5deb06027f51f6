-- send v3: delivers one message to an agent's (or the supervisor's) inbox and records it.
-- ARGV[5] recipient id   ARGV[6] message JSON (queued by its priority)
-- ARGV[7] message id     ARGV[8] type         ARGV[9] sender id
-- Returns {0} · {E_AGENT_NOT_FOUND}
local to, json, mid, kind, from = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if to ~= SUPERVISOR and redis.call('HEXISTS', key('agent', to), 'state') == 0 then return { E_AGENT_NOT_FOUND } end
enqueue(key('inbox', to), json)
emit({ type = 'message.sent', agent_id = to, message = kind .. ' message sent', message_id = mid, from = from, to = to, kind = kind })
return { 0 }
