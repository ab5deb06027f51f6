-- heartbeat v1: renews a worker's lease while it lives (including while its process runs).
-- A lease that already expired is never revived: the worker must stop and re-register.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] lease ms
-- Returns {1} renewed · {0} lost
local wid, aid, lease_ms = ARGV[5], ARGV[6], ARGV[7]
if redis.call('PEXPIRE', key('lease', wid), lease_ms) == 0 then return { 0 } end
local akey = key('agent', aid)
if redis.call('HGET', akey, 'worker_id') ~= wid then return { 0 } end
redis.call('HSET', akey, 'last_heartbeat', NOW)
return { 1 }
