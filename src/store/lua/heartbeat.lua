-- heartbeat v3: renews a worker's lease while it lives (including while its process runs).
-- A lease that expired while nobody reclaimed the worker's claims (a reclaim removes the worker
-- from the live-worker set and from its agent in the same step) is renewed: the work is still
-- this worker's, and dropping it would strand its claimed task. Once reclaimed, a lease is
-- never revived: the worker must stop, or re-register as a new claimant.
-- Tinytown layout: the Rust CLI's stop flag (`tt kill`, `tt close`) is seen here, so within a
-- heartbeat interval; it is consumed, as the Rust agent loop does. A stopped agent's worker
-- stops (its running task finishes first); a draining one stops once nothing is left. And an
-- agent a foreign whole-record rewrite left `working` with nothing to do is settled to `idle`.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] lease ms
-- Returns {1} renewed · {0} lost · {2} renewed, and a stop was requested (tinytown layout)
local wid, aid, lease_ms = ARGV[5], ARGV[6], ARGV[7]
local akey = key('agent', aid)
if redis.call('HGET', akey, 'worker_id') ~= wid then return { 0 } end
if redis.call('PEXPIRE', key('lease', wid), lease_ms) == 0 then
  if redis.call('HGET', key('workers'), wid) ~= aid then return { 0 } end
  redis.call('SET', key('lease', wid), aid, 'PX', lease_ms)
end
redis.call('HSET', akey, 'last_heartbeat', NOW)
if not TT then return { 1 } end

local a = redis.call('HMGET', akey, 'state', 'current_task')
local state, busy = a[1], a[2] or queue_len(aid) > 0 or rare().claimed_len(aid) > 0
if redis.call('DEL', key('stop', aid)) == 1 then
  if state == 'draining' then
    if busy then return { 1 } end -- finish stops it once drained
    set_agent_state(aid, 'stopped', 'drained')
  elseif state == 'stopped' then
    -- `tt kill` rewrote the record itself: no state change of ours to announce it
    emit({ type = 'agent.stopped', agent_id = aid, message = 'stop requested (stop flag)' })
  else
    set_agent_state(aid, 'stopped', 'stop requested (stop flag)')
  end
  return { 2 }
end
if state == 'working' and not busy then set_agent_state(aid, 'idle', 'queue empty') end
return { 1 }
