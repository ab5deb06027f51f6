-- group-cancel v1: cancels every task of a group that is not over yet, in one step: no task of
-- it starts meanwhile. Each is settled as settle.lua cancels one (queued entries removed, a
-- running task's worker told through task.cancelled); tasks waiting on them are cancelled in
-- turn (unless they run anyway), and the group lands (group.completed) with its last task.
-- Runs in one script: Redis serves nothing else meanwhile (≈ 30 µs per task).
-- ARGV[5] group name   ARGV[6] reason
-- Returns {tasks of the group this call ended (cascades within the group included)}
local open = {}
for _, tid in ipairs(redis.call('ZRANGE', key('group-tasks', ARGV[5]), 0, -1)) do
  local state = redis.call('HGET', key('task', tid), 'state')
  if state and not is_terminal(state) then open[#open + 1] = tid end
end
local R = rare()
-- one cancelled just before may have cancelled this one already, as its dependant: settle_task
-- then changes nothing
for _, tid in ipairs(open) do R.settle_task(tid, 'cancelled', ARGV[6]) end
return { #open }
