#!lua
-- fire_schedule: advance one schedule's last tick by compare-and-set and insert the jobs of
-- its ticks, in one atomic step: of any number of schedulers that read the same last tick,
-- one writes and the others change nothing. Leaves a wake-up token on T:wake for a due job.
--
-- KEYS (keys.py): reads KEYS[9] registered and KEYS[8] idempotency; reads and writes the
--   schedule's record T:schedule:<name> (HASH: last_tick, last_job_id, last_job_tick,
--   last_fired_at, paused), in the slot of the queue its jobs go to; when the CAS holds,
--   writes T:job:<id> (HSET), KEYS[1] available or KEYS[2] scheduled, KEYS[7] all, KEYS[8],
--   and INCRBY KEYS[11] (the id counter) when the caller did not reserve ids; for a unique
--   job, reads and writes KEYS[13] unique and reads the hash of the job it names.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] schedule name; ARGV[4] the last tick
--   the caller read ('' = none stored); ARGV[5] the new last tick; ARGV[6] n, the number of
--   jobs; then 13 per job: its tick, id ('' = next from KEYS[11]), task, payload, priority,
--   run_at ('' = now + delay), delay, max_attempts, idempotency key ('' or '=' .. key),
--   fairness key (the same form), concurrency key (the same form), unique key (the same
--   form), unique states (names joined by commas; '' without a unique key). A tick's job
--   with a fairness key keeps the key but is ordered by its run_at, like a keyless one
--   (docs/fairness.md); one whose unique key a job holds (a stored one, or an earlier tick's
--   of this call) makes no job, as enqueue.lua decides it.
-- Returns {0} when the queue is not registered yet (nothing written); {-1, id} when a reserved
--   id is taken (nothing written); {2, stored last tick or '', paused 0|1} when the CAS
--   refused (nothing written); else {1, now, id_1, created_1, ..., id_n, created_n}.
-- validates: now; the name; the expected and new last ticks (finite, expected < new); n and the
--   argument count; per job its tick (finite, increasing, after the expected tick, at most the
--   new one), id, priority, run_at, delay, max_attempts, the keys' form, and unique states
--   given with a unique key only.
local now = clock(ARGV[2])
local now_s = fmt(now)
local name = ARGV[3]
if type(name) ~= 'string' or name == '' then
    refuse('schedule name', name)
end
local expected = nil
if ARGV[4] ~= '' then
    expected = finite_arg(ARGV[4], 'expected last tick')
end
local advance_to = finite_arg(ARGV[5], 'new last tick')
if expected ~= nil and not (expected < advance_to) then
    refuse('new last tick', ARGV[5])
end
local n = integer_arg(ARGV[6], 'job count', 0)
local BASE, WIDTH = 6, 13
if #ARGV ~= BASE + n * WIDTH then
    refuse('argument count', #ARGV)
end
local previous = expected
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local tick = finite_arg(ARGV[o + 1], 'tick')
    if (previous ~= nil and not (previous < tick)) or tick > advance_to then
        refuse('tick', ARGV[o + 1])
    end
    previous = tick
    if ARGV[o + 2] ~= '' then
        id_arg(ARGV[o + 2], 'job id')
    end
    integer_arg(ARGV[o + 5], 'priority', -math.huge)
    if ARGV[o + 6] ~= '' then
        finite_arg(ARGV[o + 6], 'run_at')
    end
    if finite_arg(ARGV[o + 7], 'delay') < 0 then
        refuse('delay', ARGV[o + 7])
    end
    integer_arg(ARGV[o + 8], 'max_attempts', 1)
    local key = ARGV[o + 9]
    if key ~= '' and string.sub(key, 1, 1) ~= '=' then
        refuse('idempotency key', key)
    end
    local fair = ARGV[o + 10]
    if fair ~= '' and (string.sub(fair, 1, 1) ~= '=' or #fair < 2) then
        refuse('fairness key', fair)
    end
    local limited = ARGV[o + 11]
    if limited ~= '' and (string.sub(limited, 1, 1) ~= '=' or #limited < 2) then
        refuse('concurrency key', limited)
    end
    local unique = ARGV[o + 12]
    if unique ~= '' and (string.sub(unique, 1, 1) ~= '=' or #unique < 2) then
        refuse('unique key', unique)
    end
    if (unique == '') ~= (ARGV[o + 13] == '') then
        refuse('unique states', ARGV[o + 13])
    end
end
if redis.call('EXISTS', REGISTERED) == 0 then
    return { 0 }
end

-- The compare-and-set: the stored last tick must be the one the caller read, and not paused.
local record = TAG .. ':schedule:' .. name
local stored = redis.call('HMGET', record, 'last_tick', 'paused')
local paused = stored[2] == '1'
local last = stored[1]
if last == '' then
    last = false
end
if paused or (expected == nil and last) or (expected ~= nil and tonumber(last) ~= expected) then
    local flag = 0
    if paused then
        flag = 1
    end
    return { 2, last or '', flag }
end

-- Pass 1: decide, without writing: a stored key gives its job, a held unique key its holder
-- (or the earlier job of this call that takes it: {index}); a reserved id must be free.
local plan = {}
local fresh = 0
local first_unique = {}
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local key = ARGV[o + 9]
    local found = false
    if key ~= '' then
        found = redis.call('HGET', IDEMPOTENCY, string.sub(key, 2))
        if found then
            found = entry_job(found)
        end
    end
    local unique = string.sub(ARGV[o + 12], 2)
    if not found and unique ~= '' then
        if first_unique[unique] then
            found = { first_unique[unique] }
        else
            found = unique_holder(unique) or false
        end
    end
    if found then
        plan[i] = found
    else
        plan[i] = true
        fresh = fresh + 1
        local id = ARGV[o + 2]
        if id ~= '' and redis.call('EXISTS', job_key(id)) == 1 then
            return { -1, id }
        end
        if unique ~= '' then
            first_unique[unique] = i
        end
    end
end

-- Pass 2: write the jobs, as enqueue.lua writes them, then the schedule's record.
local next_id = nil
if fresh > 0 and ARGV[BASE + 2] == '' then
    next_id = redis.call('INCRBY', KEYS[11], fresh) - fresh + 1
end
local out = { 1, now_s }
local woken = false
local last_id = nil
local ids = {}
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local id = plan[i]
    if type(id) == 'table' then
        id = ids[id[1]]  -- the earlier job of this call that took the unique key
        plan[i] = id
    end
    if plan[i] == true then
        id = ARGV[o + 2]
        if id == '' then
            id = int(next_id)
            next_id = next_id + 1
        end
        local priority = ARGV[o + 5]
        local run_at = now
        if ARGV[o + 6] ~= '' then
            run_at = tonumber(ARGV[o + 6])
        else
            run_at = now + tonumber(ARGV[o + 7])
        end
        local run_at_s = fmt(run_at)
        local state = 'available'
        if run_at > now then
            state = 'scheduled'
        end
        local k = job_key(id)
        redis.call('HSET', k, 'task', ARGV[o + 3], 'state', state, 'payload', ARGV[o + 4],
            'priority', priority, 'run_at', run_at_s, 'max_attempts', ARGV[o + 8],
            'enqueued_at', now_s)
        local key = ARGV[o + 9]
        if key ~= '' then
            redis.call('HSET', k, 'idempotency_key', string.sub(key, 2))
            redis.call('HSET', IDEMPOTENCY, string.sub(key, 2), index_entry(id))
        end
        local fair = ARGV[o + 10]
        if fair ~= '' then
            redis.call('HSET', k, 'fairness_key', string.sub(fair, 2))
        end
        local limited = ARGV[o + 11]
        if limited ~= '' then
            redis.call('HSET', k, 'concurrency_key', string.sub(limited, 2))
        end
        local unique = ARGV[o + 12]
        if unique ~= '' then
            redis.call('HSET', k, 'unique_key', string.sub(unique, 2), 'unique_states',
                ARGV[o + 13])
            redis.call('HSET', UNIQUE, string.sub(unique, 2), index_entry(id))
        end
        if state == 'available' then
            make_available(id, priority, run_at_s)
            woken = true
        else
            redis.call('ZADD', SCHEDULED, run_at_s, id)
        end
        redis.call('ZADD', ALL, id, id)
        ids[i] = id
        out[#out + 1] = id
        out[#out + 1] = 1
    else
        out[#out + 1] = id
        out[#out + 1] = 0
    end
    last_id = id
end
redis.call('HSET', record, 'last_tick', ARGV[5], 'paused', '0')
if last_id then
    local last_tick = ARGV[BASE + (n - 1) * WIDTH + 1]
    redis.call('HSET', record, 'last_job_id', last_id, 'last_job_tick', last_tick,
        'last_fired_at', now_s)
end
if woken then
    wake()
end
return out
