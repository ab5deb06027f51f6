-- retry v4: a run failed in a way worth retrying (rate limit, timeout, stall, network); the
-- worker runs the task again after a backoff, keeping its claim. Fenced like finish: a task
-- cancelled or settled meanwhile, or claimed by someone else, is not retried. Nor is a task
-- whose own budget (max_cost_usd, max_tokens) its runs have spent: the worker fails it. (The
-- town's and the agent's budgets hold new tasks, not the retries of one already started.)
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] task id   ARGV[8] fencing token
-- ARGV[9] the failed run's error   ARGV[10] its usage JSON ('' = none)
-- ARGV[11] the attempt that failed: a re-sent retry (a reply lost to a reconnect) whose
--          attempt was already counted changes nothing
-- ARGV[12] the town's maxCostUsd ('' = none)   ARGV[13] the town's maxTokens ('' = none)
-- Returns {0, attempts, the smallest cost budget left in USD or ''} · {2, why} the task's
--         budget is spent: not retried · {E_TASK_NOT_FOUND} · {E_STALE_FENCE} · {E_SUPERSEDED, state}
local wid, aid, tid, fence, text, usage, failed = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local town_cost, town_tokens = ARGV[12], ARGV[13]
local tkey, akey = key('task', tid), key('agent', aid)
local C = coord()
local t = redis.call('HMGET', tkey, 'state', 'fence', 'attempts', 'max_cost_usd', 'max_tokens', 'budget_stop')
if not t[1] then return { E_TASK_NOT_FOUND } end
if t[2] ~= fence then return { E_STALE_FENCE } end
if t[1] ~= 'running' then return { E_SUPERSEDED, t[1] } end

-- The task's own budget, spent or not.
local function task_over()
  if not (t[4] or t[5]) then return nil end
  local cost, tokens = C.task_spent(tkey)
  return C.budget_verdict({ { 'task', t[4], t[5], cost, tokens } })
end
local function budget_remaining()
  local a = redis.call('HMGET', akey, 'max_cost_usd', 'max_tokens')
  return C.budget_left(C.budget_scopes(town_cost, town_tokens, akey, a[1], a[2], tkey, t[4], t[5]))
end

if t[6] == failed then
  -- sent again after its budget stop: the same answer, the usage not counted twice
  local over = task_over()
  if over then return { 2, 'budget exceeded: the task spent ' .. C.budget_text(over) } end
end
if t[3] ~= failed then return { 0, tonumber(t[3]), budget_remaining() } end
record_usage(tkey, aid, usage)
local over = task_over()
if over then
  redis.call('HSET', tkey, 'budget_stop', failed)
  C.emit_budget(over, aid, tid, 'fail')
  return { 2, 'budget exceeded: the task spent ' .. C.budget_text(over) }
end
local attempts = redis.call('HINCRBY', tkey, 'attempts', 1)
redis.call('HSET', tkey, 'error', text, 'updated_at', NOW)
emit({ type = 'task.retried', task_id = tid, agent_id = aid, message = text, attempt = attempts, worker_id = wid })
return { 0, attempts, budget_remaining() }
