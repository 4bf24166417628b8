#!lua flags=no-writes
-- peek: the first waiting jobs of one queue, as claim.lua would take them, without claiming.
-- A claim over several queues peeks at each, merges the heads, and then claims from each queue
-- only as many as it won in the merge (one claim.lua call per queue).
--
-- KEYS (keys.py): reads T:paused (a paused queue shows no job), KEYS[1] available, KEYS[10] due,
--   KEYS[2] scheduled, and the priority and run_at of due scheduled jobs' hashes.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] limit; ARGV[4] the most scheduled jobs
--   claim.lua moves to T:due per call.
-- Returns {priority_1, sort member_1, priority_2, sort member_2, ...}, unordered; a sort member
--   is "<run_at µs>:<L><id>" as in KEYS[1].
-- validates: now, limit (whole), the promotion batch (whole, >= 0).
local now = clock(ARGV[2])
local limit = integer_arg(ARGV[3], 'limit', -math.huge)
local promote = integer_arg(ARGV[4], 'promotion batch', 0)
local out = {}
if limit <= 0 or redis.call('EXISTS', TAG .. ':paused') == 1 then
    return out
end
for _, index in ipairs({ AVAILABLE, DUE }) do
    local heads = redis.call('ZRANGE', index, 0, limit - 1, 'WITHSCORES')
    for i = 1, #heads, 2 do
        out[#out + 1] = heads[i + 1]
        out[#out + 1] = heads[i]
    end
end
local became_due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', fmt(now), 'LIMIT', 0, promote)
for _, id in ipairs(became_due) do
    local f = redis.call('HMGET', job_key(id), 'priority', 'run_at')
    if f[1] or redis.call('EXISTS', job_key(id)) == 1 then
        out[#out + 1] = tonumber(f[1]) or 0
        out[#out + 1] = due_member(f[2], id)
    end
end
return out
