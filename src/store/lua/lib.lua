-- tinytown Lua prelude (prepended to every script by src/store/scripts.ts).
--
-- Conventions shared by all scripts:
--   KEYS[1]  the town's event stream; it routes the call to the town's hash slot. Every other
--            key is derived from the prefix and carries the same hash tag, so it lives in the
--            same slot (legal on Redis Cluster).
--   ARGV[1]  key prefix, e.g. "tt:{demo}:" (cluster layout) or "tt:demo:" (tinytown layout)
--   ARGV[2]  now, RFC 3339 UTC (the caller's clock; leases use server-side PX, not this), or ''
--            for the server's clock: a script queued behind a blocking command runs seconds
--            after it was sent (the worker's start behind its BLMOVE)
--   ARGV[3]  now, epoch milliseconds ('' with ARGV[2] '')
--   ARGV[4]  approximate cap of the event stream (XADD MAXLEN ~)
--   ARGV[5…] script-specific, documented in each script's header.
-- Return values: a table whose first element is a status; negative statuses are errors mapped
-- to typed errors in one place (scripts.ts ERROR_CODES).

local P = ARGV[1]
local NOW = ARGV[2]
local NOW_MS = tonumber(ARGV[3])
if NOW == '' then
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  NOW_MS = sec * 1000 + math.floor(usec / 1000)
  -- days since the epoch to a civil date (H. Hinnant's days_from_civil, inverted)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  NOW = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, usec)
end
local EVENTS_MAXLEN = ARGV[4]
local EVENTS = KEYS[1]

local SUPERVISOR = '00000000-0000-0000-0000-000000000001'

-- The key layout, read from the prefix: the cluster layout's carries a hash tag ("tt:{demo}:"),
-- the tinytown one does not ("tt:demo:"; town names never contain braces). TT gates what only
-- the Rust CLI needs (per-agent event streams, activity log, stop flag, urgent list, a failed
-- task's error in `result`): the cluster layout does no extra Redis work for it.
local TT = not string.find(P, '{', 1, true)
local AGENT_EVENTS_MAXLEN = '100' -- the Rust CLI's cap of `events:agent:<id>`
local ACTIVITY_MAX = 10           -- the Rust CLI's activity log: newest first, 10 lines, 1 h TTL
local ACTIVITY_TTL = 3600
local STOP_TTL = 3600             -- the Rust CLI's stop flag expires after an hour

-- Error statuses (keep in sync with scripts.ts).
local E_AGENT_NOT_FOUND = -2
local E_WORKER_ACTIVE = -3
local E_TASK_NOT_FOUND = -4
local E_STALE_FENCE = -5
local E_SUPERSEDED = -6
local E_INVALID_TRANSITION = -7
local E_NOT_IN_BACKLOG = -8
local E_AGENT_EXISTS = -9
local E_WORKER_LOST = -10
local E_INVALID_DEPENDENCY = -11
local E_GROUP_CONFLICT = -12

local function key(kind, id)
  if id then return P .. kind .. ':' .. id end
  return P .. kind
end

local function is_terminal(state)
  return state == 'completed' or state == 'failed' or state == 'cancelled'
end

-- Our dotted event type → the Rust Tinytown's snake_case event_type (remembered: a gsub costs
-- as much as a command, and one call emits the same few types over and over).
local WIRE = { ['agent.state'] = 'agent_state_changed' }
local function wire_type(t)
  local wire = WIRE[t]
  if not wire then
    wire = (string.gsub(t, '%.', '_'))
    WIRE[t] = wire
  end
  return wire
end

-- A JSON string as serde_json writes it: cjson escapes `/` as `\/` (valid JSON, other bytes).
-- Safe: in cjson's output a backslash before `/` is always that escape (a literal backslash is
-- written `\\`, and `/` always escaped), so no other sequence is touched.
local function json_string(s)
  return (string.gsub(cjson.encode(s), '\\/', '/'))
end

local function short(id)
  return string.sub(id or '?', 1, 8)
end

-- At most n bytes of s, never cutting a UTF-8 character in two (the Rust side reads the
-- activity log as strings; a broken character would hide the whole log from `tt status --deep`).
local function clip(s, n)
  if #s <= n then return s end
  local cut = n
  while cut > 0 and string.byte(s, cut + 1) >= 0x80 and string.byte(s, cut + 1) < 0xC0 do cut = cut - 1 end
  return string.sub(s, 1, cut) .. '…'
end

-- A line for the Rust CLI's activity log (`tt status --deep` shows the newest five), or nil.
local function activity_line(ev)
  local t = ev.type
  if t == 'task.started' then return '▶️ task ' .. short(ev.task_id) .. ' started' end
  if t == 'task.completed' then return '✅ task ' .. short(ev.task_id) .. ' completed' end
  if t == 'task.failed' then return '❌ task ' .. short(ev.task_id) .. ' failed: ' .. clip(ev.message, 80) end
  if t == 'task.retried' then return '🔁 task ' .. short(ev.task_id) .. ' retried' end
  if t == 'task.reclaimed' then return '↩️ task ' .. short(ev.task_id) .. ' handed back: ' .. clip(ev.message, 80) end
  if t == 'task.cancelled' then return '🚫 task ' .. short(ev.task_id) .. ' cancelled' end
  if t == 'agent.stopped' then return '🛑 stopped: ' .. clip(ev.message, 80) end
  if t == 'agent.state' and (ev.new_state == 'paused' or ev.new_state == 'draining' or ev.new_state == 'error') then
    return '🔄 ' .. ev.new_state .. ': ' .. clip(ev.message, 80)
  end
  return nil
end

-- Appends one event. `ev` holds `type` plus optional agent_id, task_id, old_state, new_state,
-- message and extra fields; the stream entry is `event_type <wire> data <json>`. In the tinytown
-- layout an event naming an agent also goes to that agent's stream and, for the events worth a
-- line, to its activity log, as the Rust Tinytown keeps them.
local function emit(ev)
  ev.event_type = wire_type(ev.type)
  ev.timestamp = NOW
  if ev.message == nil then ev.message = ev.type end
  local data = cjson.encode(ev)
  redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event_type', ev.event_type, 'data', data)
  if TT and ev.agent_id then
    redis.call('XADD', key('events:agent', ev.agent_id), 'MAXLEN', '~', AGENT_EVENTS_MAXLEN, '*',
      'event_type', ev.event_type, 'data', data)
    local line = activity_line(ev)
    if line then
      local log = key('activity', ev.agent_id)
      redis.call('LPUSH', log, line)
      redis.call('LTRIM', log, 0, ACTIVITY_MAX - 1)
      redis.call('EXPIRE', log, ACTIVITY_TTL)
    end
  end
end

-- The Rust Tinytown keeps a failed task's error in `result` (`Task::fail`): the tinytown layout
-- writes it there too, so `tt task show` tells why. Our `error` field holds it as well.
local function failed_result(tkey, text)
  if TT then redis.call('HSET', tkey, 'result', text) end
end

-- The coordination helpers (task groups, dependencies, budgets): a table of functions built on
-- first use by coord() (defined in the coordination section below).
local coord, coord_built

-- What follows a task's end for its group and the tasks waiting on it; `group` and
-- `dependants` are the task's fields of those names (call it only when one is set).
local function task_ended(tid, state, group, dependants)
  return coord().task_ended(tid, state, group, dependants)
end

-- Changes of the per-state task counters. Inside a `-many` call (scripts.ts) they are summed
-- here and written once at its end: its finishes would otherwise write running −1 and +1, and
-- completed +1, once per item.
local counts_due

local function count(state, delta)
  if counts_due then
    counts_due[state] = (counts_due[state] or 0) + delta
  else
    redis.call('HINCRBY', key('counts'), state, delta)
  end
end

-- Moves a task between states, keeping the per-state counters and the retention index right.
-- `...`: more field/value pairs for the task, written in the same HSET (each call costs).
local function set_task_state(tkey, tid, from, to, ...)
  if from then count(from, -1) end
  count(to, 1)
  if is_terminal(to) then
    redis.call('HSET', tkey, 'state', to, 'updated_at', NOW, 'completed_at', NOW, ...)
    redis.call('ZADD', key('idx:done'), NOW_MS, tid)
  else
    redis.call('HSET', tkey, 'state', to, 'updated_at', NOW, ...)
  end
end

-- Sets an agent's state and records the change; no event when nothing changes. `force` rides
-- along on stops so a remote worker knows to kill its running process.
local function set_agent_state(aid, to, why, force)
  local akey = key('agent', aid)
  local from = redis.call('HGET', akey, 'state')
  if from == to or not from then return end
  redis.call('HSET', akey, 'state', to, 'last_active_at', NOW)
  emit({ type = 'agent.state', agent_id = aid, old_state = from, new_state = to, message = why or ('agent ' .. to), force = force })
  if to == 'stopped' then emit({ type = 'agent.stopped', agent_id = aid, message = why or 'agent stopped', force = force }) end
end

-- Plain finds, not a pattern match (a seventh of the cost, and two per assign): inside a JSON
-- string a quote is escaped, so `"priority":"` occurs only as the key itself.
local function rank_of(raw)
  if string.find(raw, '"priority":"normal"', 1, true) then return 1 end
  if string.find(raw, '"priority":"high"', 1, true) then return 2 end
  if string.find(raw, '"priority":"urgent"', 1, true) then return 3 end
  if string.find(raw, '"priority":"low"', 1, true) then return 0 end
  return 1
end

-- Queues an inbox entry behind everything of its priority or higher and ahead of anything
-- lower: urgent > high > normal > low, first in first out within a priority. Only the run of
-- entries it must pass is read: at the head for high/urgent, at the tail for normal/low.
local function enqueue(list, raw)
  local rank = rank_of(raw)
  local pivot
  if rank < 2 then
    -- the common case, a normal entry behind normal ones: one look at the tail
    local last = redis.call('LINDEX', list, -1)
    if not last or rank_of(last) >= rank then
      redis.call('RPUSH', list, raw)
      return
    end
  end
  if rank >= 2 then
    local from = 0
    repeat
      local page = redis.call('LRANGE', list, from, from + 63)
      for _, entry in ipairs(page) do
        if rank_of(entry) < rank then
          redis.call('LINSERT', list, 'BEFORE', entry, raw)
          return
        end
      end
      from = from + 64
    until #page < 64
  else
    local to = -1
    repeat
      local page = redis.call('LRANGE', list, to - 63, to)
      for i = #page, 1, -1 do
        if rank_of(page[i]) >= rank then
          page = {}
          break
        end
        pivot = page[i]
      end
      to = to - 64
    until #page < 64
    if pivot then
      redis.call('LINSERT', list, 'BEFORE', pivot, raw)
      return
    end
  end
  redis.call('RPUSH', list, raw)
end

-- Usage fields a CLI may report (record JSON name, hash field name); built on first use.
local USAGE_FIELDS
local function usage_fields()
  USAGE_FIELDS = USAGE_FIELDS or {
    { 'inputTokens', 'input_tokens' }, { 'outputTokens', 'output_tokens' },
    { 'cacheReadTokens', 'cache_read_tokens' }, { 'cacheWriteTokens', 'cache_write_tokens' },
    { 'reasoningTokens', 'reasoning_tokens' }, { 'costUsd', 'cost_usd' },
  }
  return USAGE_FIELDS
end

-- Adds one run's usage to its task (summed over the task's runs), its agent (`usage_*` fields)
-- and the town (the `usage` hash). Every run counts, failed ones too: their tokens were spent.
local function record_usage(tkey, aid, usage_json)
  if usage_json == '' then return end
  local ok, run = pcall(cjson.decode, usage_json)
  if not ok or type(run) ~= 'table' then return end
  local total = {}
  local previous = redis.call('HGET', tkey, 'usage')
  if previous then
    local ok2, parsed = pcall(cjson.decode, previous)
    if ok2 and type(parsed) == 'table' then total = parsed end
  end
  for _, field in ipairs(usage_fields()) do
    local value = tonumber(run[field[1]])
    if value then
      total[field[1]] = (tonumber(total[field[1]]) or 0) + value
      redis.call('HINCRBYFLOAT', key('agent', aid), 'usage_' .. field[2], value)
      redis.call('HINCRBYFLOAT', key('usage'), field[2], value)
    end
  end
  if type(run.model) == 'string' then total.model = run.model end
  redis.call('HSET', tkey, 'usage', cjson.encode(total))
end

-- Lists a new task in the creation-order index (a counter, so tasks created within the same
-- millisecond keep their order).
local function index_task(tid)
  redis.call('ZADD', key('idx:tasks'), redis.call('INCR', key('seq:task')), tid)
end

-- ── Coordination: task groups, dependencies, budgets ──────────────────────────────────────
-- Only tasks (and agents) that use these carry the fields below, and scripts read them in the
-- HMGETs they already make: work that uses none of them costs no extra Redis command. Redis
-- runs a script's whole body on every call, so the helpers are built on first use (coord()):
-- a call that meets no group, dependency or budget does not even create them.
--   task `group`            its group's name. The group is `group:<name>` (hash; `open`: its
--                           members not yet terminal) and `group-tasks:<name>` (sorted set of
--                           task ids, in the order they joined).
--   task `dependants`       '1' while the list `dependants:<id>` holds tasks waiting on this one
--   task `depends_on`       JSON array of the ids it waits for (kept for the record)
--   task `waiting_on`       dependencies not met yet: the task is held (state `pending`, in no
--                           queue), bound for the agent `held_for` (with its inbox entry
--                           `held_entry`) or, without one, for the backlog
--   task `on_dep_failure`   'run': a failed or cancelled dependency counts as met. Default: the
--                           task is cancelled with the reason, and so, in turn, are its dependants
--   task, agent `max_cost_usd`, `max_tokens`   budgets (the town's come in each script's ARGV)
coord = function()
  if coord_built then return coord_built end
  local C = {}

  -- Adds a task to a group (whose `open` count it joins unless it is over already).
  function C.group_join(name, tid, state)
    redis.call('HSET', key('task', tid), 'group', name)
    redis.call('ZADD', key('group-tasks', name), redis.call('INCR', key('seq:group')), tid)
    if not is_terminal(state) then redis.call('HINCRBY', key('group', name), 'open', 1) end
  end

  -- The group's tasks by state, and their total (tasks removed after retention no longer count).
  function C.group_counts(name)
    local counts = { pending = 0, assigned = 0, running = 0, completed = 0, failed = 0, cancelled = 0 }
    local total = 0
    for _, tid in ipairs(redis.call('ZRANGE', key('group-tasks', name), 0, -1)) do
      local state = redis.call('HGET', key('task', tid), 'state')
      if state then
        counts[state] = (counts[state] or 0) + 1
        total = total + 1
      end
    end
    return counts, total
  end

  -- One member of the group is over: when it was the last open one, the group has landed.
  local function group_task_ended(name, tid)
    local open = redis.call('HINCRBY', key('group', name), 'open', -1)
    if open ~= 0 then
      if open < 0 then redis.call('HSET', key('group', name), 'open', 0) end -- counted already
      return
    end
    local counts, total = C.group_counts(name)
    emit({ type = 'group.completed', task_id = tid, group = name, total = total, completed = counts.completed,
      failed = counts.failed, cancelled = counts.cancelled, message = 'group ' .. name .. ' completed' })
  end

  -- A held task's last dependency is met: it goes to its agent's inbox, or to the backlog (also
  -- when its agent was removed meanwhile).
  local function release_held(tid)
    local tkey = key('task', tid)
    local h = redis.call('HMGET', tkey, 'held_for', 'held_entry')
    redis.call('HDEL', tkey, 'waiting_on', 'held_for', 'held_entry')
    if h[1] and h[2] and redis.call('HEXISTS', key('agent', h[1]), 'state') == 1 then
      redis.call('HSET', tkey, 'assigned_to', h[1])
      set_task_state(tkey, tid, 'pending', 'assigned')
      enqueue(key('inbox', h[1]), h[2])
      emit({ type = 'task.assigned', task_id = tid, agent_id = h[1], message = 'dependencies met: task assigned', released = true })
    else
      redis.call('HSET', tkey, 'updated_at', NOW)
      redis.call('RPUSH', key('backlog'), tid)
      emit({ type = 'backlog.added', task_id = tid, message = 'dependencies met: task added to the backlog', released = true })
    end
  end

  -- A task reached a terminal state. Tasks waiting on it are released when it was their last
  -- dependency (completed, or any end under 'run'), else cancelled with the reason, and their
  -- own dependants after them (a work list, not recursion); every group that loses its last
  -- open task on the way announces `group.completed`.
  function C.task_ended(tid, state, group, dependants)
    local work = { { tid, state, group, dependants } }
    local i = 1
    while i <= #work do
      local id, st, grp, deps = work[i][1], work[i][2], work[i][3], work[i][4]
      i = i + 1
      if deps then
        local list, why = key('dependants', id), nil
        for _, did in ipairs(redis.call('LRANGE', list, 0, -1)) do
          local dkey = key('task', did)
          local d = redis.call('HMGET', dkey, 'state', 'waiting_on', 'on_dep_failure', 'group', 'dependants')
          if d[1] == 'pending' and d[2] then
            if st == 'completed' or d[3] == 'run' then
              if redis.call('HINCRBY', dkey, 'waiting_on', -1) <= 0 then release_held(did) end
            else
              if not why then
                local err = redis.call('HGET', key('task', id), 'error')
                why = 'dependency ' .. id .. ' ' .. st .. (err and (': ' .. clip(err, 300)) or '')
              end
              redis.call('HDEL', dkey, 'waiting_on', 'held_for', 'held_entry')
              redis.call('HSET', dkey, 'error', why)
              set_task_state(dkey, did, 'pending', 'cancelled')
              emit({ type = 'task.cancelled', task_id = did, message = why, dependency = id, reason = 'dependency' })
              work[#work + 1] = { did, 'cancelled', d[4], d[5] }
            end
          end
        end
        redis.call('DEL', list)
        redis.call('HDEL', key('task', id), 'dependants')
      end
      if grp then group_task_ended(grp, id) end
    end
  end

  -- Budgets. Spending is what record_usage summed: cost in USD, and tokens = input + output
  -- tokens (cache reads and writes not counted). A limit is spent once spending reaches it.
  local function tokens_of(input, output)
    return (tonumber(input) or 0) + (tonumber(output) or 0)
  end
  local function is_set(v)
    return v ~= nil and v ~= false and v ~= ''
  end

  -- A task's own spending, from its usage JSON: cost, tokens.
  function C.task_spent(tkey)
    local ok, u = pcall(cjson.decode, redis.call('HGET', tkey, 'usage') or '{}')
    if not ok or type(u) ~= 'table' then u = {} end
    return tonumber(u.costUsd) or 0, tokens_of(u.inputTokens, u.outputTokens)
  end

  -- The budgets that apply to a run, as scopes {name, max cost, max tokens, cost spent, tokens
  -- spent}: the town's (limits given), the agent's (limits read by the caller from its hash)
  -- and the task's (from its hash), in that order; limits as strings, '' or false/nil = none.
  function C.budget_scopes(town_cost, town_tokens, akey, agent_cost, agent_tokens, tkey, task_cost, task_tokens)
    local scopes = {}
    if is_set(town_cost) or is_set(town_tokens) then
      local u = redis.call('HMGET', key('usage'), 'cost_usd', 'input_tokens', 'output_tokens')
      scopes[#scopes + 1] = { 'town', town_cost, town_tokens, tonumber(u[1]) or 0, tokens_of(u[2], u[3]) }
    end
    if is_set(agent_cost) or is_set(agent_tokens) then
      local u = redis.call('HMGET', akey, 'usage_cost_usd', 'usage_input_tokens', 'usage_output_tokens')
      scopes[#scopes + 1] = { 'agent', agent_cost, agent_tokens, tonumber(u[1]) or 0, tokens_of(u[2], u[3]) }
    end
    if is_set(task_cost) or is_set(task_tokens) then
      local cost, tokens = C.task_spent(tkey)
      scopes[#scopes + 1] = { 'task', task_cost, task_tokens, cost, tokens }
    end
    return scopes
  end

  -- The first spent limit, in the scopes' order, as {scope, metric, limit, spent}; or nil.
  function C.budget_verdict(scopes)
    for _, s in ipairs(scopes) do
      local max_cost, max_tokens = tonumber(s[2]), tonumber(s[3])
      if max_cost and s[4] >= max_cost then return { s[1], 'costUsd', max_cost, s[4] } end
      if max_tokens and s[5] >= max_tokens then return { s[1], 'tokens', max_tokens, s[5] } end
    end
    return nil
  end

  -- The smallest cost budget left over the scopes not spent yet, in USD with six decimals (for
  -- the CLI's own budget flag), or '' when none limits cost.
  function C.budget_left(scopes)
    local left
    for _, s in ipairs(scopes) do
      local max_cost = tonumber(s[2])
      if max_cost and max_cost > s[4] and (not left or max_cost - s[4] < left) then left = max_cost - s[4] end
    end
    if not left then return '' end
    return string.format('%.6f', math.floor(left * 1e6) / 1e6)
  end

  -- "$0.0246 of $0.02 (maxCostUsd)" / "3312 tokens of 3000 (maxTokens)"
  function C.budget_text(over)
    if over[2] == 'costUsd' then
      return '$' .. string.format('%.6g', over[4]) .. ' of $' .. string.format('%.6g', over[3]) .. ' (maxCostUsd)'
    end
    return string.format('%d', over[4]) .. ' tokens of ' .. string.format('%d', over[3]) .. ' (maxTokens)'
  end

  function C.emit_budget(over, aid, tid, action)
    emit({ type = 'budget.exceeded', agent_id = aid, task_id = tid, scope = over[1], metric = over[2],
      limit = over[3], spent = over[4], action = action,
      message = 'budget exceeded: ' .. over[1] .. ' spent ' .. C.budget_text(over) })
  end

  coord_built = C
  return C
end

-- Only the Rust CLI writes the urgent list (`tt send --urgent`): the cluster layout has none.
local function queue_len(aid)
  local n = redis.call('LLEN', key('inbox', aid))
  if TT then n = n + redis.call('LLEN', key('urgent', aid)) end
  return n
end

-- After an agent's current task ended (however it ended): clear it and pick the next state.
-- A pause, stop or error written meanwhile stays: the server settles races, not the worker.
-- Returns the agent's `claim_backlog` flag, read in the same HMGET (for auto_claim).
local function agent_after_task(aid, tid)
  local akey = key('agent', aid)
  local a = redis.call('HMGET', akey, 'current_task', 'state', 'claim_backlog')
  if a[1] == tid then redis.call('HDEL', akey, 'current_task') end
  local state = a[2]
  if state == 'working' and queue_len(aid) == 0 then
    set_agent_state(aid, 'idle', 'queue empty')
  elseif state == 'draining' and queue_len(aid) == 0 then
    set_agent_state(aid, 'stopped', 'drained')
  end
  return a[3]
end

-- The task a message stands for: task_assign names it; task and query messages become a task
-- with the message's id when the agent claims them.
local function task_id_of(msg)
  if msg.type == 'task_assign' then return msg.task_id end
  if msg.type == 'task' or msg.type == 'query' then return msg.id end
  return nil
end

local function decode(raw)
  local ok, msg = pcall(cjson.decode, raw)
  if ok and type(msg) == 'table' then return msg end
  return nil
end

-- How far down the backlog an idle agent looks for a task it may take.
local AUTO_CLAIM_SCAN = 200

-- An idle agent with claim_backlog takes the oldest backlog task whose tags are empty or meet
-- its role or tags, into its own inbox. Not when its own or the town's budget (`town_cost`,
-- `town_tokens`, '' or nil = none) is spent: it could not start the task, which would wait in
-- its inbox instead of the backlog, where others may take it. Returns the task id, or nil.
local function auto_claim(aid, mid, town_cost, town_tokens)
  local akey = key('agent', aid)
  local a = redis.call('HMGET', akey, 'state', 'claim_backlog', 'role_id', 'tags', 'current_task', 'max_cost_usd', 'max_tokens')
  if a[2] ~= '1' or (a[1] ~= 'idle' and a[1] ~= 'working') or a[5] or queue_len(aid) > 0 then return nil end
  if a[6] or a[7] or (town_cost and town_cost ~= '') or (town_tokens and town_tokens ~= '') then
    local C = coord()
    if C.budget_verdict(C.budget_scopes(town_cost, town_tokens, akey, a[6], a[7])) then return nil end
  end

  local wants = {}
  if a[3] then wants[a[3]] = true end
  local ok, agent_tags = pcall(cjson.decode, a[4] or '[]')
  if ok and type(agent_tags) == 'table' then for _, tag in ipairs(agent_tags) do wants[tag] = true end end

  local function matches(tags_json)
    local ok2, tags = pcall(cjson.decode, tags_json or '[]')
    if not ok2 or type(tags) ~= 'table' or #tags == 0 then return true end
    for _, tag in ipairs(tags) do if wants[tag] then return true end end
    return false
  end

  for _, tid in ipairs(redis.call('LRANGE', key('backlog'), 0, AUTO_CLAIM_SCAN - 1)) do
    local tkey = key('task', tid)
    local t = redis.call('HMGET', tkey, 'state', 'tags', 'priority')
    if t[1] == 'pending' and matches(t[2]) then
      redis.call('LREM', key('backlog'), 1, tid)
      local message = '{"id":' .. json_string(mid) .. ',"from":"' .. SUPERVISOR .. '","to":' .. json_string(aid) ..
        ',"type":"task_assign","task_id":' .. json_string(tid) .. ',"priority":' .. json_string(t[3] or 'normal') ..
        ',"created_at":' .. json_string(NOW) .. ',"correlation_id":null}'
      redis.call('HSET', tkey, 'assigned_to', aid)
      set_task_state(tkey, tid, 'pending', 'assigned')
      enqueue(key('inbox', aid), message)
      emit({ type = 'backlog.claimed', task_id = tid, agent_id = aid, message = 'backlog task claimed', auto = true })
      emit({ type = 'task.assigned', task_id = tid, agent_id = aid, message = 'task assigned' })
      return tid
    end
  end
  return nil
end

-- Acts on one entry a worker moved from the agent's inbox into its processing list: starts the
-- work it stands for, or stores a note, or discards it. The body of the start script, and what
-- finish runs to hand a busy worker its next task in the same step. `town_cost` and
-- `town_tokens` are the town's budget ('' = none). Returns
--   {1, fence, task fields (flat HGETALL), notes (raw JSON list), the agent's last CLI session
--      id or '', the smallest cost budget left in USD or ''}  work started; also the answer to
--                 a start run twice (ioredis re-sends a command whose reply was lost with its
--                 connection): the same claim again
--   {2, state}          agent paused/stopped/error: entry back at the head of the inbox; also
--                       when the town's or the agent's budget is spent: the agent is paused
--                       (`budget.exceeded` says why)
--   {3}                 entry discarded (unreadable, or its task was settled or moved), or its
--                       task failed because its own budget is spent
--   {4}                 entry stored in the notes
--   {E_WORKER_LOST}     this worker no longer serves the agent: entry back in the inbox
local function start_entry(wid, aid, raw, max_notes, town_cost, town_tokens)
  local akey, plist, inbox = key('agent', aid), key('processing', wid), key('inbox', aid)

  local function put_back()
    redis.call('LREM', plist, 1, raw)
    redis.call('LPUSH', inbox, raw)
  end

  -- The entry was consumed without starting work: settle the agent if nothing is left.
  local function settle_if_empty(state)
    if redis.call('HGET', akey, 'current_task') or queue_len(aid) > 0 then return end
    if state == 'working' then
      set_agent_state(aid, 'idle', 'queue empty')
    elseif state == 'draining' then
      set_agent_state(aid, 'stopped', 'drained')
    end
  end

  local a = redis.call('HMGET', akey, 'state', 'worker_id', 'max_cost_usd', 'max_tokens', 'session_id')
  local state = a[1]
  if not state or a[2] ~= wid then
    redis.call('LREM', plist, 1, raw)
    if state then redis.call('LPUSH', inbox, raw) end
    return { E_WORKER_LOST }
  end

  -- Whether a budget applies to this start (the task's own is looked at below).
  local budgeted = a[3] or a[4] or (town_cost and town_cost ~= '') or (town_tokens and town_tokens ~= '')

  local msg = decode(raw)
  local tid = msg and task_id_of(msg)
  local tkey = tid and key('task', tid)
  -- One read serves both the repeat check here and the start below (re-read if made below).
  local task_fields = { 'state', 'assigned_to', 'max_cost_usd', 'max_tokens', 'group', 'dependants', 'error', 'worker_id', 'fence' }
  local t = tid and redis.call('HMGET', tkey, unpack(task_fields)) or {}
  if t[1] == 'running' and t[8] == wid then
    local left = ''
    if budgeted or t[3] or t[4] then
      local C = coord()
      left = C.budget_left(C.budget_scopes(town_cost, town_tokens, akey, a[3], a[4], tkey, t[3], t[4]))
    end
    return { 1, t[9], redis.call('HGETALL', tkey), redis.call('LRANGE', key('notes', aid), 0, max_notes - 1), a[5] or '', left }
  end

  if state == 'paused' or state == 'stopped' or state == 'error' then
    put_back()
    return { 2, state }
  end

  if msg and not tid then
    redis.call('LREM', plist, 1, raw)
    redis.call('RPUSH', key('notes', aid), raw)
    redis.call('LTRIM', key('notes', aid), -100, -1)
    emit({ type = 'message.received', agent_id = aid, message = 'note stored', message_id = msg.id, kind = msg.type })
    settle_if_empty(state)
    return { 4 }
  end

  if tid and msg.type ~= 'task_assign' and redis.call('EXISTS', tkey) == 0 then
    -- a task or query sent as a message becomes a task now, answered to its sender on completion
    local text = msg.description or msg.question or ''
    local tags = msg.type == 'query' and '["query"]' or '[]'
    redis.call('HSET', tkey, 'id', tid, 'description', text, 'created_at', NOW, 'updated_at', NOW,
      'tags', tags, 'priority', msg.priority or 'normal', 'attempts', 0, 'max_attempts', 3,
      'assigned_to', aid)
    if msg.type == 'query' and type(msg.from) == 'string' then redis.call('HSET', tkey, 'reply_to', msg.from) end
    index_task(tid)
    set_task_state(tkey, tid, nil, 'assigned')
    emit({ type = 'task.created', task_id = tid, agent_id = aid, message = msg.type .. ' message became a task' })
    t = redis.call('HMGET', tkey, unpack(task_fields))
  end

  if t[1] ~= 'assigned' or t[2] ~= aid then
    redis.call('LREM', plist, 1, raw)
    emit({ type = 'message.discarded', agent_id = aid, task_id = tid or nil, message = msg and 'task no longer assigned here' or 'unreadable inbox entry' })
    settle_if_empty(state)
    return { 3 }
  end

  -- Budgets: the town's or the agent's spent holds the agent as a pause would (entry back at
  -- the head of the inbox); the task's own spent (by earlier runs) fails the task.
  local left = ''
  if budgeted or t[3] or t[4] then
    local C = coord()
    local scopes = C.budget_scopes(town_cost, town_tokens, akey, a[3], a[4], tkey, t[3], t[4])
    local over = C.budget_verdict(scopes)
    if over and over[1] ~= 'task' then
      put_back()
      C.emit_budget(over, aid, tid, 'hold')
      set_agent_state(aid, 'paused', 'budget exceeded: ' .. over[1] .. ' spent ' .. C.budget_text(over))
      return { 2, 'paused' }
    end
    if over then
      local why = 'budget exceeded: the task spent ' .. C.budget_text(over)
      redis.call('LREM', plist, 1, raw)
      redis.call('HSET', tkey, 'error', why)
      failed_result(tkey, why)
      set_task_state(tkey, tid, 'assigned', 'failed')
      redis.call('HINCRBY', akey, 'tasks_failed', 1)
      C.emit_budget(over, aid, tid, 'fail')
      emit({ type = 'task.failed', task_id = tid, agent_id = aid, message = why })
      if t[5] or t[6] then task_ended(tid, 'failed', t[5], t[6]) end
      settle_if_empty(state)
      return { 3 }
    end
    left = C.budget_left(scopes)
  end

  local attempts = redis.call('HINCRBY', tkey, 'attempts', 1)
  local fence = redis.call('INCR', key('seq:fence'))
  if t[7] then redis.call('HDEL', tkey, 'error') end
  set_task_state(tkey, tid, 'assigned', 'running', 'started_at', NOW, 'fence', fence, 'worker_id', wid)
  redis.call('HSET', akey, 'current_task', tid, 'last_active_at', NOW)
  -- (`state` is still the agent's: nothing above wrote it; already working means no change)
  if state ~= 'draining' and state ~= 'working' then set_agent_state(aid, 'working', 'task started') end
  emit({ type = 'task.started', task_id = tid, agent_id = aid, message = 'task started', attempt = attempts })
  return { 1, fence, redis.call('HGETALL', tkey), redis.call('LRANGE', key('notes', aid), 0, max_notes - 1), a[5] or '', left }
end

-- Helpers of the scripts off the per-task path (sweeps, settles from outside, stops, answers to
-- queries): a table built on first use by rare(), as coord() is, so the prelude Redis runs on
-- every call does not create them.
local rare_built
local function rare()
  if rare_built then return rare_built end
  local R = {}

  -- Tinytown layout: a task a foreign writer settled (`tt task complete` rewrites the hash and
  -- nothing else) is neither in the retention index nor announced, so waits would not wake. Both
  -- are done here, once: the retention index marks a settlement as known.
  function R.foreign_settlement(tid, state, aid)
    if not TT or not is_terminal(state) or redis.call('ZSCORE', key('idx:done'), tid) then return end
    redis.call('ZADD', key('idx:done'), NOW_MS, tid)
    emit({ type = 'task.' .. state, task_id = tid, agent_id = aid or nil, message = 'task ' .. state .. ' by another writer', external = true })
    local c = redis.call('HMGET', key('task', tid), 'group', 'dependants')
    if c[1] or c[2] then task_ended(tid, state, c[1], c[2]) end
  end

  -- External control of one task (settle.lua, group-cancel.lua): cancel, complete or fail it,
  -- whatever its state. Returns {0, previous state} · {E_TASK_NOT_FOUND} · {E_INVALID_TRANSITION, state}
  function R.settle_task(tid, outcome, text)
    local tkey = key('task', tid)
    local t = redis.call('HMGET', tkey, 'state', 'assigned_to', 'group', 'dependants', 'waiting_on')
    local state, aid = t[1], t[2]
    if not state then return { E_TASK_NOT_FOUND } end
    if is_terminal(state) then
      -- the same request again (a reply lost to a reconnect, or a repeated call) is no error
      local said = redis.call('HGET', tkey, outcome == 'completed' and 'result' or 'error')
      if state == outcome and said == text then return { 0, state } end
      return { E_INVALID_TRANSITION, state }
    end

    if state == 'pending' then
      if t[5] then
        redis.call('HDEL', tkey, 'waiting_on', 'held_for', 'held_entry')
      else
        redis.call('LREM', key('backlog'), 1, tid)
      end
    end
    if state == 'assigned' and aid then
      for _, list in ipairs({ key('inbox', aid), key('urgent', aid) }) do
        local entry = R.find_entry(list, tid)
        if entry then redis.call('LREM', list, 1, entry) end
      end
    end
    if outcome == 'completed' then
      redis.call('HSET', tkey, 'result', text)
    else
      redis.call('HSET', tkey, 'error', text)
      if outcome == 'failed' then failed_result(tkey, text) end
    end
    set_task_state(tkey, tid, state, outcome)
    emit({ type = 'task.' .. outcome, task_id = tid, agent_id = aid or nil, message = text, external = true, previous = state })
    if t[3] or t[4] then task_ended(tid, outcome, t[3], t[4]) end
    if state == 'assigned' and aid then
      local astate = redis.call('HGET', key('agent', aid), 'state')
      if astate == 'draining' and queue_len(aid) == 0 and R.claimed_len(aid) == 0
        and not redis.call('HGET', key('agent', aid), 'current_task') then
        set_agent_state(aid, 'stopped', 'drained')
      end
    end
    return { 0, state }
  end

  -- The Rust CLI's stop flag, as `tt kill` sets it.
  function R.set_stop_flag(aid)
    redis.call('SET', key('stop', aid), '1', 'EX', STOP_TTL)
  end

  -- Answers a query: an informational message to its sender `to`, correlated with the task.
  function R.send_answer(to, from, tid, msg_id, summary)
    local json = '{"id":' .. json_string(msg_id) .. ',"from":' .. json_string(from) .. ',"to":' .. json_string(to) ..
      ',"type":"informational","summary":' .. json_string(summary) .. ',"priority":"normal","created_at":' ..
      json_string(NOW) .. ',"correlation_id":' .. json_string(tid) .. '}'
    enqueue(key('inbox', to), json)
    emit({ type = 'message.sent', agent_id = to, task_id = tid, message = 'answer sent', message_id = msg_id, from = from, to = to, kind = 'info' })
  end

  -- The queued entry that stands for a task, found by scanning the list: only cancels and external
  -- settles need it, so tasks do not carry a copy of their entry.
  function R.find_entry(list, tid)
    local assign = '"task_id":"' .. tid .. '"'
    local own = '"id":"' .. tid .. '"'
    for _, entry in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if string.find(entry, assign, 1, true) or string.find(entry, own, 1, true) then return entry end
    end
    return nil
  end

  -- Entries the agent's current worker moved out of the inbox (BLMOVE) and has not acted on yet:
  -- still queued work as far as idleness and draining are concerned.
  function R.claimed_len(aid)
    local wid = redis.call('HGET', key('agent', aid), 'worker_id')
    if not wid then return 0 end
    return redis.call('LLEN', key('processing', wid))
  end

  function R.has_live_worker(aid, except_wid)
    local wid = redis.call('HGET', key('agent', aid), 'worker_id')
    return wid and wid ~= except_wid and redis.call('EXISTS', key('lease', wid)) == 1
  end

  -- Hands one claimed inbox entry back.
  --   mode 'handback': to the head of the agent's inbox as it is (graceful close, forced stop)
  --   mode 'reclaim' : the worker was lost; counts against max_attempts; to the agent's inbox
  --                    when it has a live worker (`to_agent`), else to the backlog
  function R.requeue_entry(raw, aid, mode, to_agent, why)
    local msg = decode(raw)
    local tid = msg and task_id_of(msg)
    if not tid then
      if aid then redis.call('LPUSH', key('inbox', aid), raw) end
      return
    end
    local tkey = key('task', tid)
    local t = redis.call('HMGET', tkey, 'state', 'attempts', 'max_attempts', 'assigned_to', 'group', 'dependants')
    local state, attempts, max_attempts = t[1], tonumber(t[2]) or 0, tonumber(t[3]) or 3
    if not state then
      -- a task or query message not yet turned into a task: deliver it again
      if aid and msg.type ~= 'task_assign' then redis.call('LPUSH', key('inbox', aid), raw) end
      return
    end
    if state ~= 'running' and state ~= 'assigned' then return end -- settled meanwhile: drop the entry
    redis.call('HDEL', tkey, 'worker_id')
    if mode == 'reclaim' and state == 'running' and attempts >= max_attempts then
      local text = 'worker lost ' .. attempts .. ' times (' .. why .. ')'
      redis.call('HSET', tkey, 'error', text)
      failed_result(tkey, text)
      set_task_state(tkey, tid, state, 'failed')
      if aid then redis.call('HINCRBY', key('agent', aid), 'tasks_failed', 1) end
      emit({ type = 'task.failed', task_id = tid, agent_id = aid, message = 'worker lost ' .. attempts .. ' times', attempts = attempts })
      if t[5] or t[6] then task_ended(tid, 'failed', t[5], t[6]) end
      return
    end
    if mode == 'handback' or to_agent then
      redis.call('LPUSH', key('inbox', aid), raw)
      set_task_state(tkey, tid, state, 'assigned')
      emit({ type = 'task.reclaimed', task_id = tid, agent_id = aid, message = why, to = 'agent', reason = mode, attempts = attempts })
    else
      redis.call('HDEL', tkey, 'assigned_to')
      redis.call('LPUSH', key('backlog'), tid)
      set_task_state(tkey, tid, state, 'pending')
      emit({ type = 'task.reclaimed', task_id = tid, agent_id = aid, message = why, to = 'backlog', reason = mode, attempts = attempts })
    end
  end

  -- Empties a worker's processing list back into the queues and forgets the worker. `known_aid`
  -- (optional) is the agent as the worker itself knows it: a worker that was reclaimed while
  -- frozen is no longer in the set of live workers, yet may have claimed entries since.
  function R.release_worker(wid, mode, to_agent, why, known_aid)
    local plist = key('processing', wid)
    local aid = redis.call('HGET', key('workers'), wid) or known_aid
    local entries = redis.call('LRANGE', plist, 0, -1)
    -- newest first, so LPUSH leaves them at the head in their original order
    for i = #entries, 1, -1 do R.requeue_entry(entries[i], aid, mode, to_agent, why) end
    redis.call('DEL', plist, key('lease', wid))
    redis.call('HDEL', key('workers'), wid)
    if aid then
      local akey = key('agent', aid)
      if redis.call('HGET', akey, 'worker_id') == wid then redis.call('HDEL', akey, 'worker_id', 'current_task') end
    end
    return aid
  end

  rare_built = R
  return R
end
