-- register-worker v4: attaches a worker instance to an agent and takes its first lease.
-- A previous worker whose lease is gone has its claimed work handed back to this agent first.
-- Also returns the id of the newest event at registration: agent state changes up to it
-- (a predecessor's stop, say) are history for this worker, whenever its reader delivers them.
-- Tinytown layout: a stop flag left by the Rust CLI is cleared: attaching a worker restarts the
-- agent, as `tt restart` does.
-- ARGV[5] agent id   ARGV[6] worker id   ARGV[7] lease ms
-- Returns {0, state, last event id ('0-0' if none)} · {E_AGENT_NOT_FOUND}
--         · {E_WORKER_ACTIVE, other worker id}
local aid, wid, lease_ms = ARGV[5], ARGV[6], ARGV[7]
local akey = key('agent', aid)
local state = redis.call('HGET', akey, 'state')
if not state then return { E_AGENT_NOT_FOUND } end

local previous = redis.call('HGET', akey, 'worker_id')
if previous and previous ~= wid then
  if redis.call('EXISTS', key('lease', previous)) == 1 then return { E_WORKER_ACTIVE, previous } end
  -- this agent has a live worker again (the caller), so its lost work returns to its inbox
  rare().release_worker(previous, 'reclaim', true, 'worker replaced')
end

redis.call('SET', key('lease', wid), aid, 'PX', lease_ms)
redis.call('HSET', key('workers'), wid, aid)
redis.call('HSET', akey, 'worker_id', wid, 'last_heartbeat', NOW)
redis.call('HDEL', akey, 'error')
if TT then redis.call('DEL', key('stop', aid)) end
if state ~= 'paused' and state ~= 'draining' then
  local current = redis.call('HGET', akey, 'current_task')
  set_agent_state(aid, current and 'working' or 'idle', 'worker attached')
end
local last = redis.call('XREVRANGE', EVENTS, '+', '-', 'COUNT', 1)[1]
return { 0, redis.call('HGET', akey, 'state'), last and last[1] or '0-0' }
