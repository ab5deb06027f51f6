-- start v10: a worker moved one inbox entry into its processing list (BLMOVE); act on it.
-- Work (task_assign, task, query) starts: task → running, attempts + 1, a fencing token,
-- agent → working. Informational messages and acks move to the agent's notes; when such an
-- entry (or a discarded one) was the last, the agent settles: working → idle, draining → stopped.
-- Budgets are checked before work starts (town, agent: the agent is paused; task: it fails).
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] the raw entry, or '' for "the entry my BLMOVE
-- just moved": the worker then sends this script right behind its BLMOVE, on the same
-- connection, and Redis runs it as soon as the BLMOVE returns (one round trip for both; the
-- BLMOVE pushes on the right, so the entry is the list's last)
-- ARGV[8] max notes returned   ARGV[9] the town's maxCostUsd ('' = none)
-- ARGV[10] the town's maxTokens ('' = none)
-- Returns what start_entry (lib.lua) returns; with ARGV[7] '': { the raw entry, that reply },
-- or { '' } when the list is empty (the BLMOVE timed out).
local raw = ARGV[7]
if raw ~= '' then
  return start_entry(ARGV[5], ARGV[6], raw, tonumber(ARGV[8]), ARGV[9], ARGV[10])
end
raw = redis.call('LINDEX', key('processing', ARGV[5]), -1)
if not raw then return { '' } end
return { raw, start_entry(ARGV[5], ARGV[6], raw, tonumber(ARGV[8]), ARGV[9], ARGV[10]) }
