-- control v3: pause, resume, drain or stop an agent. Written by the server, so a stop or pause
-- issued during a run is never overwritten by the run's end.
-- A drain stops at once only when nothing runs, nothing is queued and nothing is claimed.
-- Tinytown layout: a stop or drain of an agent no live worker of ours serves also sets the Rust
-- stop flag, since a Rust agent loop (`tt spawn`) may run it and it heeds only that flag.
-- ARGV[5] agent id   ARGV[6] 'pause' | 'resume' | 'drain' | 'stop'   ARGV[7] '1' = force (stop)
-- Returns {0, new state} · {E_AGENT_NOT_FOUND} · {E_INVALID_TRANSITION, state}
local aid, action, force = ARGV[5], ARGV[6], ARGV[7]
local akey = key('agent', aid)
local state = redis.call('HGET', akey, 'state')
if not state then return { E_AGENT_NOT_FOUND } end
local busy = redis.call('HGET', akey, 'current_task')

local target
if action == 'pause' then
  if state == 'stopped' or state == 'error' then return { E_INVALID_TRANSITION, state } end
  target = 'paused'
elseif action == 'resume' then
  if state ~= 'paused' then return { 0, state } end
  target = busy and 'working' or 'idle'
elseif action == 'drain' then
  if state == 'stopped' or state == 'error' then return { 0, state } end
  target = (busy or queue_len(aid) > 0 or rare().claimed_len(aid) > 0) and 'draining' or 'stopped'
elseif action == 'stop' then
  target = 'stopped'
end

set_agent_state(aid, target, 'agent ' .. action, force == '1' or nil)
if TT and (action == 'stop' or action == 'drain') and not rare().has_live_worker(aid) then rare().set_stop_flag(aid) end
return { 0, target }
