#!lua
-- enqueue: insert a batch of new jobs into one queue in one atomic step, deduplicating on
-- idempotency key, and leave a wake-up token on T:wake when any of them is due now.
--
-- KEYS (keys.py): reads KEYS[9] registered and KEYS[8] idempotency; writes T:job:<id> (HSET),
--   KEYS[1] available or KEYS[2] scheduled, KEYS[7] all, KEYS[8]; INCRBY KEYS[11] (the id
--   counter) when the caller did not reserve ids. For fair-keyed jobs due now: reads the heads
--   of KEYS[1] available and KEYS[10] due at the job's priority, reads and writes KEYS[12]
--   fairness (and removes its entries idle for ARGV[5] seconds). For a keyed job: reads the
--   hash of the job its idempotency key names (a finished one past the window gives the key
--   up: HDEL of its idempotency_key field); for a unique job: reads and writes KEYS[13] unique
--   and reads the hash of the job it names (its holder while in its unique_states).
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] queue name (unused: the keys name it);
--   ARGV[4] n, the number of jobs; ARGV[5] seconds after which a fairness key is forgotten;
--   ARGV[6] the fields per job: 13; 10 for a batch without idempotency or unique keys; 9 for
--   one without concurrency keys either (the fields left out are then ''); then per job: id
--   ('' = take the next id from KEYS[11]), task, payload, priority, run_at ('' = now +
--   delay), delay, max_attempts, idempotency key ('' = none, else '=' .. key), fairness key
--   (the same form), concurrency key (the same form; written to the hash's concurrency_key,
--   which a capped claim reads), idempotency window seconds ('' = none), unique key ('' or
--   '=' .. key), unique states (names joined by commas; '' without a unique key).
-- A fair-keyed job due now is ordered (its member's first half, and its hash's order_at) at
--   max(V, last) + 1 µs, V the order time of the head of the queue's due jobs at its priority
--   (now if none), last the order time of the key's latest job (backends/fairness.py).
-- Returns {0} when the queue is not registered yet (nothing written: register it, call again);
--   {-1, id} when a reserved id is taken already (nothing written); else
--   {1, now, id_1, created_1, ..., id_n, created_n}.
-- validates: now; n and the argument count; the idle seconds (finite, >= 0); per job an id (''
--   or digits), priority (whole), run_at ('' or finite), delay (finite, >= 0), max_attempts
--   (whole, >= 1), the form of the four keys, the window ('' or finite, >= 0), unique states
--   given with a unique key only.
-- Nothing is written before every job was checked, so a refused call leaves no trace; under
-- maxmemory the #!lua flags (no allow-oom) make Redis refuse the whole script up front.
local now = clock(ARGV[2])
local now_s = fmt(now)
local n = integer_arg(ARGV[4], 'job count', 0)
local BASE, WIDTH = 6, tonumber(ARGV[6])
if (WIDTH ~= 9 and WIDTH ~= 10 and WIDTH ~= 13) or #ARGV ~= BASE + n * WIDTH then
    refuse('argument count', #ARGV)
end
-- field j (10 to 13) of the job at offset o: '' past the batch's width
local function keyed(o, j)
    if j > WIDTH then
        return ''
    end
    return ARGV[o + j]
end
local stale_after = seconds_arg(ARGV[5], 'fairness idle seconds')
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    if ARGV[o + 1] ~= '' then
        id_arg(ARGV[o + 1], 'job id')
    end
    integer_arg(ARGV[o + 4], 'priority', -math.huge)
    if ARGV[o + 5] ~= '' then
        finite_arg(ARGV[o + 5], 'run_at')
    end
    if finite_arg(ARGV[o + 6], 'delay') < 0 then
        refuse('delay', ARGV[o + 6])
    end
    integer_arg(ARGV[o + 7], 'max_attempts', 1)
    local key = ARGV[o + 8]
    if key ~= '' and string.sub(key, 1, 1) ~= '=' then
        refuse('idempotency key', key)
    end
    local fair = ARGV[o + 9]
    if fair ~= '' and (string.sub(fair, 1, 1) ~= '=' or #fair < 2) then
        refuse('fairness key', fair)
    end
    local concurrency = keyed(o, 10)
    if concurrency ~= '' and (string.sub(concurrency, 1, 1) ~= '=' or #concurrency < 2) then
        refuse('concurrency key', concurrency)
    end
    if keyed(o, 11) ~= '' and finite_arg(keyed(o, 11), 'idempotency window') < 0 then
        refuse('idempotency window', keyed(o, 11))
    end
    local unique = keyed(o, 12)
    if unique ~= '' and (string.sub(unique, 1, 1) ~= '=' or #unique < 2) then
        refuse('unique key', unique)
    end
    if (unique == '') ~= (keyed(o, 13) == '') then
        refuse('unique states', keyed(o, 13))
    end
end
if redis.call('EXISTS', REGISTERED) == 0 then
    return { 0 }
end

-- Pass 1: decide, without writing, the jobs in order. plan[i] = stored id (a duplicate of a
-- stored job), {index} (a duplicate of an earlier new job of this batch, whose keys are
-- taken from then on), or true (a new job).
local plan = {}
local first_in_batch, first_unique = {}, {}
local fresh = 0
local released = {}
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local key = ARGV[o + 8]
    local unique = keyed(o, 12)
    local decided = false
    if key ~= '' then
        key = string.sub(key, 2)
        local stored, entry = nil, nil
        if not first_in_batch[key] then
            entry = redis.call('HGET', IDEMPOTENCY, key)
        end
        if entry then
            local hash
            stored, hash = entry_job(entry)
            if keyed(o, 11) ~= '' then
                -- a finished job whose window has passed gives its key up (written in pass 2)
                local f = redis.call('HMGET', hash, 'state', 'finished_at')
                if FINISHED[f[1]] and f[2] and tonumber(f[2]) + tonumber(keyed(o, 11)) <= now then
                    released[#released + 1] = hash
                    released[#released + 1] = key
                    released[#released + 1] = entry
                    stored = nil
                end
            end
        end
        if stored then
            plan[i] = stored
            decided = true
        elseif first_in_batch[key] then
            plan[i] = { first_in_batch[key] }
            decided = true
        end
    end
    if not decided and unique ~= '' then
        unique = string.sub(unique, 2)
        if first_unique[unique] then
            plan[i] = { first_unique[unique] }
            decided = true
        else
            local holder = unique_holder(unique)
            if holder then
                plan[i] = holder
                decided = true
            end
        end
    end
    if not decided then
        plan[i] = true
        fresh = fresh + 1
        local id = ARGV[o + 1]
        if id ~= '' and redis.call('EXISTS', job_key(id)) == 1 then
            return { -1, id }
        end
        if key ~= '' then
            first_in_batch[key] = i
        end
        if unique ~= '' then
            first_unique[unique] = i
        end
    end
end

-- Pass 2: write. Index entries are collected and added with one command per index.
-- A released key leaves the index too, unless this call gives it to a new job (HSET below):
-- an entry naming a job that no longer has the key would outlive that job's prune.
for r = 1, #released, 3 do
    local hash, key, entry = released[r], released[r + 1], released[r + 2]
    redis.call('HDEL', hash, 'idempotency_key')
    if redis.call('HGET', IDEMPOTENCY, key) == entry then
        redis.call('HDEL', IDEMPOTENCY, key)
    end
end
local next_id = nil
if fresh > 0 and ARGV[BASE + 1] == '' then
    next_id = redis.call('INCRBY', KEYS[11], fresh) - fresh + 1
end
local now_prefix = due_prefix(now)
local now_us = math.floor(now * 1000000 + 0.5)

-- The fair order (backends/fairness.py), in whole microseconds.
local function head_us(index, priority)
    local head = redis.call('ZRANGEBYSCORE', index, priority, priority, 'LIMIT', 0, 1)
    if head[1] then
        return tonumber(string.sub(head[1], 1, 17))
    end
    return nil
end
local virtual, bases, counts, lasts = {}, {}, {}, {}
local function fair_order_us(fair, priority)
    local start = priority .. ':' .. fair
    if bases[start] == nil then
        if virtual[priority] == nil then
            local a, d = head_us(AVAILABLE, priority), head_us(DUE, priority)
            local v = a or d or now_us
            if a and d and d < a then
                v = d
            end
            virtual[priority] = v
        end
        local last = lasts[fair]
        if last == nil then
            last = tonumber(redis.call('ZSCORE', FAIRNESS, fair))
        end
        local base = virtual[priority]
        if last and last > base then
            base = last
        end
        bases[start], counts[start] = base, 0
    end
    counts[start] = counts[start] + 1
    local order = bases[start] + counts[start]
    if lasts[fair] == nil or order > lasts[fair] then
        lasts[fair] = order
    end
    return order
end

local out = { 1, now_s }
local ids = {}
local available, scheduled, all, keys, uniques = {}, {}, {}, {}, {}
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local p = plan[i]
    if p == true then
        local id = ARGV[o + 1]
        if id == '' then
            id = int(next_id)
            next_id = next_id + 1
        end
        ids[i] = id
        local priority = ARGV[o + 4]
        local run_at, run_at_s, prefix = now, now_s, now_prefix
        if ARGV[o + 5] ~= '' then
            run_at = tonumber(ARGV[o + 5])
            run_at_s, prefix = fmt(run_at), nil
        elseif ARGV[o + 6] ~= '0.0' then
            run_at = now + tonumber(ARGV[o + 6])
            run_at_s, prefix = fmt(run_at), nil
        end
        local state = 'available'
        if run_at > now then
            state = 'scheduled'
        end
        local k = job_key(id)
        local fair = ARGV[o + 9]
        if fair ~= '' then
            fair = string.sub(fair, 2)
            if state == 'available' then
                local order_us = fair_order_us(fair, priority)
                prefix = string.format('%017d:', order_us)
                redis.call('HSET', k, 'fairness_key', fair, 'order_at', fmt(order_us / 1000000))
            else
                redis.call('HSET', k, 'fairness_key', fair)
            end
        end
        local key = ARGV[o + 8]
        if key ~= '' then
            key = string.sub(key, 2)
            redis.call('HSET', k, 'task', ARGV[o + 2], 'state', state, 'payload', ARGV[o + 3],
                'priority', priority, 'run_at', run_at_s, 'max_attempts', ARGV[o + 7],
                'enqueued_at', now_s, 'idempotency_key', key)
            keys[#keys + 1] = key
            keys[#keys + 1] = index_entry(id)
        else
            redis.call('HSET', k, 'task', ARGV[o + 2], 'state', state, 'payload', ARGV[o + 3],
                'priority', priority, 'run_at', run_at_s, 'max_attempts', ARGV[o + 7],
                'enqueued_at', now_s)
        end
        local concurrency = keyed(o, 10)
        if concurrency ~= '' then
            redis.call('HSET', k, 'concurrency_key', string.sub(concurrency, 2))
        end
        local unique = keyed(o, 12)
        if unique ~= '' then
            unique = string.sub(unique, 2)
            redis.call('HSET', k, 'unique_key', unique, 'unique_states', keyed(o, 13))
            uniques[#uniques + 1] = unique
            uniques[#uniques + 1] = index_entry(id)
        end
        if state == 'available' then
            available[#available + 1] = priority
            available[#available + 1] = (prefix or due_prefix(run_at)) .. string.char(48 + #id) .. id
        else
            scheduled[#scheduled + 1] = run_at_s
            scheduled[#scheduled + 1] = id
        end
        all[#all + 1] = id
        all[#all + 1] = id
        out[#out + 1] = id
        out[#out + 1] = 1
    elseif type(p) == 'table' then
        out[#out + 1] = ids[p[1]]
        out[#out + 1] = 0
    else
        out[#out + 1] = p
        out[#out + 1] = 0
    end
end
if #keys > 0 then
    call_many('HSET', IDEMPOTENCY, keys)
end
if #uniques > 0 then
    call_many('HSET', UNIQUE, uniques)
end
if #scheduled > 0 then
    call_many('ZADD', SCHEDULED, scheduled)
end
if #all > 0 then
    call_many('ZADD', ALL, all)
end
if #available > 0 then
    call_many('ZADD', AVAILABLE, available)
    wake()
end
if next(lasts) ~= nil then
    local recorded = {}
    for fair, order in pairs(lasts) do
        recorded[#recorded + 1] = int(order)
        recorded[#recorded + 1] = fair
    end
    call_many('ZADD', FAIRNESS, recorded)
    redis.call('ZREMRANGEBYSCORE', FAIRNESS, '-inf',
        '(' .. int(now_us - math.floor(stale_after * 1000000)))
end
return out
