-- idle v1 (read-only): what waitForIdle needs, in one round trip. Claimed-but-not-started
-- entries count as work, so the moment between BLMOVE and start never looks idle.
-- ARGV[5] agent id
-- Returns {state or '', current task or '', queued, claimed, error or ''}
local aid = ARGV[5]
local a = redis.call('HMGET', key('agent', aid), 'state', 'current_task', 'worker_id', 'error')
local claimed = 0
if a[3] then claimed = redis.call('LLEN', key('processing', a[3])) end
return { a[1] or '', a[2] or '', queue_len(aid), claimed, a[4] or '' }
