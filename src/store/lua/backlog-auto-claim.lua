-- backlog-auto-claim v5: an idle agent with claim_backlog takes the oldest backlog task whose
-- tags are empty or meet the agent's role or tags (see auto_claim in lib.lua). Atomic: racing
-- agents never share a task. Workers call it when a task lands in the backlog.
-- An agent whose own or the town's budget is spent claims nothing.
-- ARGV[5] agent id   ARGV[6] message id for the task_assign
-- ARGV[7] the town's maxCostUsd ('' = none)   ARGV[8] the town's maxTokens ('' = none)
-- Returns {1, task id} claimed · {0} nothing to claim
local tid = auto_claim(ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if tid then return { 1, tid } end
return { 0 }
