#!lua flags=no-writes
-- summary: counts per state and the run_at of the longest-waiting jobs of one queue, for
-- stats() and next_run_at().
--
-- KEYS (keys.py): reads KEYS[1..6] and KEYS[10] and, for the oldest waiting job, the run_at
--   of a few jobs' hashes T:job:<id>.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] the most priority bands to walk per index.
-- Returns {now, available, scheduled, running, succeeded, dead, cancelled, oldest run_at among
--   due waiting jobs ('' = none), earliest run_at among all waiting jobs ('' = none)}.
-- Within one priority, KEYS[1] and KEYS[10] are ordered by run_at, so their oldest job is the
-- head of one of their priority bands: the walk visits the head of each band (up to ARGV[3]
-- bands; past that the figure covers the most urgent bands only).
-- validates: now, the number of bands (whole, >= 0).
local now = clock(ARGV[2])
local bands_per_index = integer_arg(ARGV[3], 'bands', 0)
local out = { fmt(now) }
out[#out + 1] = redis.call('ZCARD', AVAILABLE)
out[#out + 1] = redis.call('ZCARD', SCHEDULED) + redis.call('ZCARD', DUE)
out[#out + 1] = redis.call('ZCARD', RUNNING)
out[#out + 1] = redis.call('ZCARD', FINISHED.succeeded)
out[#out + 1] = redis.call('ZCARD', FINISHED.dead)
out[#out + 1] = redis.call('ZCARD', FINISHED.cancelled)

local oldest = nil
for _, index in ipairs({ AVAILABLE, DUE }) do
    local head = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
    local bands = bands_per_index
    while head[1] and bands > 0 do
        local run_at = tonumber(redis.call('HGET', job_key(id_of_member(head[1])), 'run_at'))
        if run_at and (oldest == nil or run_at < oldest) then
            oldest = run_at
        end
        head = redis.call('ZRANGEBYSCORE', index, '(' .. head[2], '+inf', 'WITHSCORES', 'LIMIT',
            0, 1)
        bands = bands - 1
    end
end
local earliest = oldest
local first = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
if first[1] then
    local run_at = tonumber(first[2])
    if run_at <= now and (oldest == nil or run_at < oldest) then
        oldest = run_at
    end
    if earliest == nil or run_at < earliest then
        earliest = run_at
    end
end
out[#out + 1] = oldest and fmt(oldest) or ''
out[#out + 1] = earliest and fmt(earliest) or ''
return out
