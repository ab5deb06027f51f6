-- finish v7: records the outcome of a run, fenced. Only the worker holding the task's current
-- fencing token may settle it; a zombie's late result is rejected and recorded as an event.
-- A cancel, complete or fail written by someone else during the run wins over the run's end.
-- Idempotent: the same finish sent again (a reply lost to a reconnect) changes nothing.
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] task id   ARGV[8] fencing token
-- ARGV[9] the processing entry   ARGV[10] 'completed' | 'failed'
-- ARGV[11] result or error text  ARGV[12] this run's usage JSON ('' = none)
-- ARGV[13] notes that rode along (dropped now)   ARGV[14] id for a reply message
-- ARGV[15] the CLI's session id ('' = none), kept on the task and the agent
-- ARGV[16] message id for a backlog task the agent auto-claims now (claim_backlog agents), so
--          it is never idle while matching backlog work waits
-- ARGV[17] '1' = hand the worker its next task in the same step: move the next inbox entry into
--          its processing list and start it (start_entry), saving a BLMOVE and a start per task
--          while the agent has a queue (tinytown layout: the urgent list first, where the Rust
--          CLI puts `tt send --urgent`)   ARGV[18] max notes returned with it
-- ARGV[19] the town's maxCostUsd ('' = none)   ARGV[20] the town's maxTokens ('' = none), for
--          the budget check of that next task
-- A task that ends here releases or cancels the tasks waiting on it and may land its group
-- (task_ended in lib.lua), in this same step.
-- Returns {0, outcome, next?} · {0, 'repeat'} · {E_TASK_NOT_FOUND} · {E_STALE_FENCE} · {E_SUPERSEDED, state, next?}
--   next: start_entry's reply for the next task, with the raw entry appended, when one started
local wid, aid, tid, fence, raw = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local outcome, text, usage, notes_used, reply_id, session, claim_id = ARGV[10], ARGV[11], ARGV[12], tonumber(ARGV[13]), ARGV[14], ARGV[15], ARGV[16]
local fetch, max_notes, town_cost, town_tokens = ARGV[17] == '1', tonumber(ARGV[18]), ARGV[19], ARGV[20]
local tkey, akey = key('task', tid), key('agent', aid)

-- The next task for a worker that keeps going; notes and stale entries on the way are handled
-- as start would. nil when the queue is empty, the agent is held, or the worker was replaced.
local function next_task()
  if not fetch then return nil end
  for _ = 1, 20 do
    local entry = TT and redis.call('LMOVE', key('urgent', aid), key('processing', wid), 'LEFT', 'RIGHT') or nil
    if not entry then entry = redis.call('LMOVE', key('inbox', aid), key('processing', wid), 'LEFT', 'RIGHT') end
    if not entry then return nil end
    local started = start_entry(wid, aid, entry, max_notes, town_cost, town_tokens)
    if started[1] == 1 then
      started[#started + 1] = entry
      return started
    end
    if started[1] ~= 3 and started[1] ~= 4 then return nil end
  end
  return nil
end

redis.call('LREM', key('processing', wid), 1, raw)
local t = redis.call('HMGET', tkey, 'state', 'fence', 'reply_to', 'finished_fence', 'group', 'dependants', 'error')
local state = t[1]
if not state then return { E_TASK_NOT_FOUND } end
if t[4] == fence then
  -- the first run of this finish may have started the next task: hand that claim back again
  local claimed = fetch and redis.call('LINDEX', key('processing', wid), 0)
  local again = claimed and start_entry(wid, aid, claimed, max_notes, town_cost, town_tokens)
  if again and again[1] == 1 then
    again[#again + 1] = claimed
    return { 0, 'repeat', again }
  end
  return { 0, 'repeat' }
end
if t[2] ~= fence then
  emit({ type = 'task.rejected', task_id = tid, agent_id = aid, message = 'late result from a stale claim rejected', worker_id = wid })
  return { E_STALE_FENCE }
end

-- `finished_fence` (what makes a second run of this finish a repeat) is written by each outcome
-- below, in the HSET it makes anyway.
record_usage(tkey, aid, usage)
if notes_used > 0 then redis.call('LTRIM', key('notes', aid), notes_used, -1) end
if session ~= '' then
  redis.call('HSET', tkey, 'session_id', session)
  redis.call('HSET', akey, 'session_id', session)
end
redis.call('HDEL', tkey, 'worker_id')

if state ~= 'running' then
  redis.call('HSET', tkey, 'finished_fence', fence)
  rare().foreign_settlement(tid, state, aid) -- `tt task complete` during the run
  if agent_after_task(aid, tid) == '1' then auto_claim(aid, claim_id, town_cost, town_tokens) end
  return { E_SUPERSEDED, state, next_task() }
end

local function reply(summary)
  if t[3] then rare().send_answer(t[3], aid, tid, reply_id, summary) end
end

if outcome == 'completed' then
  if t[7] then redis.call('HDEL', tkey, 'error') end -- a retried run's error is history once it succeeds
  set_task_state(tkey, tid, 'running', 'completed', 'result', text, 'finished_fence', fence)
  redis.call('HINCRBY', akey, 'tasks_completed', 1)
  redis.call('HINCRBY', akey, 'rounds_completed', 1)
  emit({ type = 'task.completed', task_id = tid, agent_id = aid, message = 'task completed' })
  reply(text)
else
  redis.call('HSET', tkey, 'error', text, 'finished_fence', fence)
  failed_result(tkey, text)
  set_task_state(tkey, tid, 'running', 'failed')
  redis.call('HINCRBY', akey, 'tasks_failed', 1)
  emit({ type = 'task.failed', task_id = tid, agent_id = aid, message = text })
  reply('failed: ' .. text)
end
if t[5] or t[6] then task_ended(tid, outcome, t[5], t[6]) end
if agent_after_task(aid, tid) == '1' then auto_claim(aid, claim_id, town_cost, town_tokens) end
return { 0, outcome, next_task() }
