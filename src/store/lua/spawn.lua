-- spawn v4: registers an agent, or revives a stopped/errored/abandoned one of the same name.
-- ARGV[5] new agent id        ARGV[6] name          ARGV[7] cli
-- ARGV[8] role ('' = none)    ARGV[9] nickname ('' = none)
-- ARGV[10] tags (JSON array)  ARGV[11] claim_backlog ('0'|'1')
-- ARGV[12] initial state ('starting' when a worker follows, 'cold' otherwise)
-- ARGV[13] default max attempts of its tasks ('' = none)
-- ARGV[14] its budget: maxCostUsd ('' = none)   ARGV[15] maxTokens ('' = none)
-- ARGV[16] the git worktree it works in ('' = none)
-- Returns {0, id} created · {1, id} revived · {E_AGENT_EXISTS, id, state}
local id, name, cli, role, nickname = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local tags, claim, initial, max_attempts = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local max_cost, max_tokens, worktree = ARGV[14], ARGV[15], ARGV[16]

local function set_optional(akey, field, value)
  if value == '' then redis.call('HDEL', akey, field) else redis.call('HSET', akey, field, value) end
end

local existing = redis.call('HGET', key('idx:names'), name)
if existing then
  local akey = key('agent', existing)
  local state = redis.call('HGET', akey, 'state')
  if not state then
    -- the index outlived its record: repair it and register afresh
    redis.call('HDEL', key('idx:names'), name)
    redis.call('SREM', key('idx:agents'), existing)
  else
    local wid = redis.call('HGET', akey, 'worker_id')
    local abandoned = wid and redis.call('EXISTS', key('lease', wid)) == 0
    if state ~= 'stopped' and state ~= 'error' and not abandoned then
      return { E_AGENT_EXISTS, existing, state }
    end
    redis.call('HSET', akey, 'cli', cli, 'tags', tags, 'claim_backlog', claim, 'last_active_at', NOW)
    set_optional(akey, 'role_id', role)
    set_optional(akey, 'nickname', nickname)
    set_optional(akey, 'max_attempts', max_attempts)
    set_optional(akey, 'max_cost_usd', max_cost)
    set_optional(akey, 'max_tokens', max_tokens)
    set_optional(akey, 'worktree', worktree)
    redis.call('HDEL', akey, 'error')
    set_agent_state(existing, initial, 'respawned')
    emit({ type = 'agent.spawned', agent_id = existing, message = 'agent ' .. name .. ' respawned', name = name, revived = true })
    return { 1, existing }
  end
end

local akey = key('agent', id)
redis.call('HSET', akey, 'id', id, 'name', name, 'agent_type', 'worker', 'state', initial, 'cli', cli,
  'created_at', NOW, 'last_heartbeat', NOW, 'last_active_at', NOW, 'tasks_completed', 0,
  'rounds_completed', 0, 'spawn_mode', 'fresh', 'tasks_failed', 0, 'tags', tags, 'claim_backlog', claim)
if role ~= '' then redis.call('HSET', akey, 'role_id', role) end
if nickname ~= '' then redis.call('HSET', akey, 'nickname', nickname) end
if max_attempts ~= '' then redis.call('HSET', akey, 'max_attempts', max_attempts) end
if max_cost ~= '' then redis.call('HSET', akey, 'max_cost_usd', max_cost) end
if max_tokens ~= '' then redis.call('HSET', akey, 'max_tokens', max_tokens) end
if worktree ~= '' then redis.call('HSET', akey, 'worktree', worktree) end
redis.call('SADD', key('idx:agents'), id)
redis.call('HSET', key('idx:names'), name, id)
emit({ type = 'agent.spawned', agent_id = id, message = 'agent ' .. name .. ' spawned', name = name })
return { 0, id }
