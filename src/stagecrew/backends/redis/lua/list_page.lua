#!lua flags=no-writes
-- list_page: one page of the jobs of one queue that match a filter, newest (highest id) first.
--
-- KEYS (keys.py): reads KEYS[1..7], KEYS[10] and the jobs' hashes T:job:<id>.
-- ARGV[1] T; ARGV[2] a JobFilter as JSON (see _lib.lua); ARGV[3] only ids below this one
--   ('' = no bound); ARGV[4] the most jobs to return; ARGV[5] the most index entries to look at.
-- Returns {cursor, job, job, ...}: each job is {id, field, value, field, value, ...} (its hash);
--   cursor is the id to pass as ARGV[3] for the next page, or '' when this queue has no more.
-- With the filter's ids, only those are looked at. With states whose indexes hold at most
-- ARGV[5] jobs in all, those indexes are read and sorted; otherwise KEYS[7] (every job, by id)
-- is walked down from ARGV[3], ARGV[5] entries per call.
-- validates: the filter, ARGV[3] ('' or whole), want and budget (whole, >= 0 and >= 1).
local matches, f = job_filter(ARGV[2])
local below = nil
if ARGV[3] ~= '' then
    below = integer_arg(ARGV[3], 'cursor', 0)
end
local want = integer_arg(ARGV[4], 'page size', 0)
local budget = integer_arg(ARGV[5], 'budget', 1)
local INDEX = {
    running = RUNNING, succeeded = FINISHED.succeeded, dead = FINISHED.dead,
    cancelled = FINISHED.cancelled,
}

local candidates = nil
local complete = true -- candidates hold every id below `below` that could match
if f.ids and #f.ids > 0 then
    candidates = {}
    for _, i in ipairs(f.ids) do
        candidates[#candidates + 1] = int(i)
    end
elseif f.states and #f.states > 0 then
    local indexes = {}  -- {key, members are due members?}
    for _, s in ipairs(f.states) do
        if s == 'available' then
            indexes[#indexes + 1] = { AVAILABLE, true }
        elseif s == 'scheduled' then
            indexes[#indexes + 1] = { SCHEDULED, false }
            indexes[#indexes + 1] = { DUE, true }
        elseif INDEX[s] then
            indexes[#indexes + 1] = { INDEX[s], false }
        end
    end
    local total = 0
    for _, index in ipairs(indexes) do
        total = total + redis.call('ZCARD', index[1])
    end
    if total <= budget then
        candidates = {}
        for _, index in ipairs(indexes) do
            for _, m in ipairs(redis.call('ZRANGE', index[1], 0, -1)) do
                if index[2] then
                    m = id_of_member(m)
                end
                candidates[#candidates + 1] = m
            end
        end
    end
end
if candidates == nil then
    local upper = '+inf'
    if below then
        upper = '(' .. int(below)
    end
    candidates = redis.call('ZREVRANGEBYSCORE', ALL, upper, '-inf', 'LIMIT', 0, budget)
    complete = #candidates < budget
else
    local kept = {}
    for _, id in ipairs(candidates) do
        if below == nil or tonumber(id) < below then
            kept[#kept + 1] = id
        end
    end
    table.sort(kept, function(a, b) return tonumber(a) > tonumber(b) end)
    candidates = kept
end

local out = { '' }
local found = 0
local last = nil
for _, id in ipairs(candidates) do
    if found >= want then
        break
    end
    last = id
    local k = job_key(id)
    local h = redis.call('HMGET', k, 'state', 'task', 'finished_at')
    if h[1] and matches(id, h[1], h[2], h[3]) then
        local job = redis.call('HGETALL', k)
        table.insert(job, 1, id)
        out[#out + 1] = job
        found = found + 1
    end
end
if last ~= nil and (found >= want or not complete) then
    out[1] = last
end
return out
