-- group-progress v1 (read-only): a task group's tasks counted by state, in one round trip.
-- ARGV[5] group name
-- Returns {total, pending, assigned, running, completed, failed, cancelled}
local counts, total = coord().group_counts(ARGV[5])
return { total, counts.pending, counts.assigned, counts.running, counts.completed, counts.failed, counts.cancelled }
