-- start v9: a worker moved one inbox entry into its processing list (BLMOVE); act on it.
-- Work (task_assign, task, query) starts: task → running, attempts + 1, a fencing token,
-- agent → working. Informational messages and acks move to the agent's notes; when such an
-- entry (or a discarded one) was the last, the agent settles: working → idle, draining → stopped.
-- Budgets are checked before work starts (town, agent: the agent is paused; task: it fails).
-- ARGV[5] worker id   ARGV[6] agent id   ARGV[7] the raw entry   ARGV[8] max notes returned
-- ARGV[9] the town's maxCostUsd ('' = none)   ARGV[10] the town's maxTokens ('' = none)
-- Returns what start_entry (lib.lua) returns.
return start_entry(ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10])
