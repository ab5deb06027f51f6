-- backlog-auto-claim v4: an idle agent with claim_backlog takes the oldest backlog task whose
-- tags are empty or meet the agent's role or tags (see auto_claim in lib.lua). Atomic: racing
-- agents never share a task. Workers call it when a task lands in the backlog.
-- ARGV[5] agent id   ARGV[6] message id for the task_assign
-- Returns {1, task id} claimed · {0} nothing to claim
local tid = auto_claim(ARGV[5], ARGV[6])
if tid then return { 1, tid } end
return { 0 }
