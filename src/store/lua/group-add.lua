-- group-add v1: adds existing tasks to a task group (a task belongs to one group at most). All
-- or nothing: every id is checked before any is added. A task already in this group is left as
-- it is; a task still open joins the group's open count, one that is over only its list.
-- ARGV[5] group name   ARGV[6] task ids (JSON array)
-- Returns {0, tasks added} · {E_TASK_NOT_FOUND, task id} · {E_GROUP_CONFLICT, task id, its group}
local name, ids = ARGV[5], cjson.decode(ARGV[6])
local found = {}
for i, tid in ipairs(ids) do
  local t = redis.call('HMGET', key('task', tid), 'state', 'group')
  if not t[1] then return { E_TASK_NOT_FOUND, tid } end
  if t[2] and t[2] ~= name then return { E_GROUP_CONFLICT, tid, t[2] } end
  found[i] = t
end
local added, seen = 0, {}
for i, tid in ipairs(ids) do
  if not found[i][2] and not seen[tid] then
    seen[tid] = true -- an id given twice joins once
    coord().group_join(name, tid, found[i][1])
    added = added + 1
  end
end
return { 0, added }
