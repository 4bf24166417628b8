#!lua flags=allow-oom
-- cancel_workflow: unless the workflow succeeded or was cancelled already, mark it cancelled,
-- cancel its waiting and held members now and flag its running ones (as cancel.lua does), in
-- one atomic step; it never advances again.
--
-- KEYS (keys.py): reads and writes T:workflow:<id> (status, finished_at) and its members'
--   hashes T:job:<id>; writes KEYS[1] available or KEYS[2] scheduled or KEYS[10] due, and
--   KEYS[6] cancelled. Publishes the ids of the members cancelled now on T:finished.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] workflow id.
-- Returns 1 when it cancelled the workflow, 0 when it was final already or does not exist.
-- validates: now, the workflow id.
local now_s = fmt(clock(ARGV[2]))
local workflow = ARGV[3]
if not string.match(workflow, '^[%w_-]+$') then
    refuse('workflow id', workflow)
end
local record = TAG .. ':workflow:' .. workflow
local w = redis.call('HMGET', record, 'status', 'members')
if not w[1] or (w[1] ~= 'running' and w[1] ~= 'failed') then
    return 0
end
redis.call('HSET', record, 'status', 'cancelled', 'finished_at', now_s)
local cancelled = {}
for _, ids in ipairs(cjson.decode(w[2])) do
    for _, id in ipairs(ids) do
        local k = job_key(id)
        local f = redis.call('HMGET', k, 'state', 'run_at', 'order_at')
        if f[1] == 'available' or f[1] == 'scheduled' then
            unindex(id, f[1], f[2], f[3])
            redis.call('HSET', k, 'state', 'cancelled', 'finished_at', now_s)
            redis.call('ZADD', FINISHED.cancelled, now_s, id)
            cancelled[#cancelled + 1] = id
        elseif f[1] == 'running' then
            redis.call('HSET', k, 'cancel_requested', '1')
        end
    end
end
announce_finished(cancelled)
return 1
