-- settle v7: external control of a task: cancel, complete or fail it, whatever its state.
-- Queued entries are removed; a running task is settled here and its worker's later result is
-- superseded (the worker hears task.cancelled and stops the process). A task held by its
-- dependencies leaves its hold. Its end releases or cancels the tasks waiting on it and may
-- land its group (task_ended in lib.lua).
-- ARGV[5] task id   ARGV[6] 'cancelled' | 'completed' | 'failed'   ARGV[7] result, error or reason
-- Returns {0, previous state} · {E_TASK_NOT_FOUND} · {E_INVALID_TRANSITION, state}
return rare().settle_task(ARGV[5], ARGV[6], ARGV[7])
