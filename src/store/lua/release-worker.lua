-- release-worker v3: a worker leaves (close, stop, force stop). Unfinished claimed work goes
-- back to the head of the agent's inbox, untouched (a hand-back is not a lost attempt), also
-- when the worker was already reclaimed (and forgotten) while it was frozen.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] state to leave the agent in ('' = unchanged)
-- ARGV[8] reason
-- Returns {0, state}
local wid, aid, final, why = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
rare().release_worker(wid, 'handback', true, why, aid)
local akey = key('agent', aid)
if final ~= '' and redis.call('HGET', akey, 'worker_id') == false then
  local state = redis.call('HGET', akey, 'state')
  if state and state ~= 'error' then set_agent_state(aid, final, why) end
end
return { 0, redis.call('HGET', akey, 'state') or '' }
