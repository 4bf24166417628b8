#!lua flags=allow-oom
-- age_priorities: the starvation guard for one queue. A due waiting job whose priority is worse
-- (higher) than ARGV[4] gets max(floor, p - n), p its enqueued priority (kept in the hash's
-- original_priority from the first change on) and n the whole ARGV[3] intervals since its
-- run_at, where that improves it (aging is never undone). Each priority level of KEYS[1] and
-- KEYS[10] is read in claim order from its head, and left at the first member whose order time
-- is less than one interval old; a moved job keeps its member, so it keeps its place in order.
--
-- KEYS (keys.py): reads and writes KEYS[1] available and KEYS[10] due (a member's score is its
--   job's priority), reads KEYS[2] scheduled (due jobs no claim moved yet), and writes the aged
--   jobs' hashes T:job:<id> (priority, original_priority).
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] interval seconds; ARGV[4] floor;
--   ARGV[5] the most jobs to change.
-- Returns the number of jobs whose priority changed.
-- validates: now, the interval (finite, > 0), the floor (whole), the limit (whole, >= 1).
if #ARGV ~= 5 then
    refuse('argument count', #ARGV)
end
local now = clock(ARGV[2])
local every = finite_arg(ARGV[3], 'aging interval')
if every <= 0 then
    refuse('aging interval', ARGV[3])
end
local floor = integer_arg(ARGV[4], 'aging floor', -math.huge)
local limit = integer_arg(ARGV[5], 'limit', 1)
local young_us = math.floor((now - every) * 1000000 + 0.5)
local budget = limit * 10 -- members looked at, so that a pass stays short
local changed = 0
for _, index in ipairs({ AVAILABLE, DUE }) do
    local level = redis.call('ZRANGEBYSCORE', index, '(' .. int(floor), '+inf', 'WITHSCORES',
        'LIMIT', 0, 1)
    while level[1] and changed < limit and budget > 0 do
        local p = tonumber(level[2])
        local members = redis.call('ZRANGEBYSCORE', index, p, p, 'LIMIT', 0, budget)
        for _, member in ipairs(members) do
            if changed >= limit or budget <= 0
                    or tonumber(string.sub(member, 1, 17)) > young_us then
                break
            end
            budget = budget - 1
            local id = id_of_member(member)
            local k = job_key(id)
            local f = redis.call('HMGET', k, 'run_at', 'original_priority')
            local run_at = tonumber(f[1])
            if run_at then
                local enqueued = tonumber(f[2]) or p
                local steps = math.floor((now - run_at) / every)
                local aged = enqueued - steps
                if aged < floor then
                    aged = floor
                end
                if steps > 0 and aged < p then
                    redis.call('ZADD', index, aged, member)
                    redis.call('HSET', k, 'priority', int(aged), 'original_priority', int(enqueued))
                    changed = changed + 1
                end
            end
        end
        level = redis.call('ZRANGEBYSCORE', index, '(' .. int(p), '+inf', 'WITHSCORES',
            'LIMIT', 0, 1)
    end
end
-- Scheduled jobs whose run_at passed that no claim moved to KEYS[10] yet: their hash only (the
-- claim that moves them reads their priority there).
if changed < limit and budget > 0 then
    local ids = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', fmt(now - every), 'LIMIT', 0,
        math.min(budget, limit - changed))
    for _, id in ipairs(ids) do
        local k = job_key(id)
        local f = redis.call('HMGET', k, 'run_at', 'original_priority', 'priority')
        local run_at, p = tonumber(f[1]), tonumber(f[3])
        if run_at and p and p > floor then
            local enqueued = tonumber(f[2]) or p
            local steps = math.floor((now - run_at) / every)
            local aged = enqueued - steps
            if aged < floor then
                aged = floor
            end
            if steps > 0 and aged < p then
                redis.call('HSET', k, 'priority', int(aged), 'original_priority', int(enqueued))
                changed = changed + 1
            end
        end
    end
end
return changed
