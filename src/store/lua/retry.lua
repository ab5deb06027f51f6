-- retry v3: a run failed in a way worth retrying (rate limit, timeout, stall, network); the
-- worker runs the task again after a backoff, keeping its claim. Fenced like finish: a task
-- cancelled or settled meanwhile, or claimed by someone else, is not retried.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] task id   ARGV[8] fencing token
-- ARGV[9] the failed run's error   ARGV[10] its usage JSON ('' = none)
-- ARGV[11] the attempt that failed: a re-sent retry (a reply lost to a reconnect) whose
--          attempt was already counted changes nothing
-- Returns {0, attempts} · {E_TASK_NOT_FOUND} · {E_STALE_FENCE} · {E_SUPERSEDED, state}
local wid, aid, tid, fence, text, usage, failed = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local tkey = key('task', tid)
local t = redis.call('HMGET', tkey, 'state', 'fence', 'attempts')
if not t[1] then return { E_TASK_NOT_FOUND } end
if t[2] ~= fence then return { E_STALE_FENCE } end
if t[1] ~= 'running' then return { E_SUPERSEDED, t[1] } end
if t[3] ~= failed then return { 0, tonumber(t[3]) } end
record_usage(tkey, aid, usage)
local attempts = redis.call('HINCRBY', tkey, 'attempts', 1)
redis.call('HSET', tkey, 'error', text, 'updated_at', NOW)
emit({ type = 'task.retried', task_id = tid, agent_id = aid, message = text, attempt = attempts, worker_id = wid })
return { 0, attempts }
