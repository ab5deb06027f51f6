-- heartbeat v2: renews a worker's lease while it lives (including while its process runs).
-- A lease that expired while nobody reclaimed the worker's claims (a reclaim removes the worker
-- from the live-worker set and from its agent in the same step) is renewed: the work is still
-- this worker's, and dropping it would strand its claimed task. Once reclaimed, a lease is
-- never revived: the worker must stop, or re-register as a new claimant.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] lease ms
-- Returns {1} renewed · {0} lost
local wid, aid, lease_ms = ARGV[5], ARGV[6], ARGV[7]
local akey = key('agent', aid)
if redis.call('HGET', akey, 'worker_id') ~= wid then return { 0 } end
if redis.call('PEXPIRE', key('lease', wid), lease_ms) == 0 then
  if redis.call('HGET', key('workers'), wid) ~= aid then return { 0 } end
  redis.call('SET', key('lease', wid), aid, 'PX', lease_ms)
end
redis.call('HSET', akey, 'last_heartbeat', NOW)
return { 1 }
