-- _lib: helpers shared by the scripts. The loader (scripts.py) inserts this preamble and the
-- functions a script calls right after the script's first line (its #!lua shebang).
--
-- Every script runs on ONE queue and receives the same KEYS, in this order:
--   KEYS[1] T:available    ZSET  due jobs: score = priority, member = "<run_at µs, 17 digits>:<L><id>"
--                                where L is the character '0' + the id's length, so that
--                                ZRANGE order is (priority, run_at, id)
--   KEYS[2] T:scheduled    ZSET  delayed and retrying jobs: score = run_at, member = id
--   KEYS[3] T:running      ZSET  claimed jobs: score = lease expiry, member = id
--   KEYS[4] T:succeeded    ZSET  score = finished_at, member = id
--   KEYS[5] T:dead         ZSET  the dead-letter queue: score = finished_at, member = id
--   KEYS[6] T:cancelled    ZSET  score = finished_at, member = id
--   KEYS[7] T:all          ZSET  every job of the queue: score = member = id (listing, newest first)
--   KEYS[8] idempotency    HASH  idempotency key -> job id ({prefix}:idempotency on a single Redis,
--                                T:idempotency on Cluster)
--   KEYS[9] T:registered   STRING "1" once the queue is listed in {prefix}:queues
--   KEYS[10] T:due         ZSET  scheduled jobs whose run_at has passed, moved here by claim.lua
--                                and ordered like KEYS[1]; they stay in state 'scheduled' until
--                                claimed, so the 'scheduled' index is KEYS[2] and KEYS[10]
--   KEYS[11] {prefix}:ids  STRING the job id counter (only enqueue uses it, on a single Redis)
-- where T is the queue's hash tag "{prefix:queue}", passed again as ARGV[1]: job hashes are named
-- T:job:<id> and the wake-up channel T:wake. Those keys share T, hence the slot of KEYS[1..7,9,10].
-- In a job hash, lease_owner, lease_expires_at and result hold '' where they are None, and an
-- absent attempt, lost or claims is 0. `claims` counts every claim of the job and only claim.lua
-- changes it (by one more): it is the fencing token of the latest claim.
--
-- Times are seconds since the epoch, written with %.17g so that a double survives the round trip.
-- A "now" argument of '' means the Redis server's clock (TIME); tests pass a fake time instead.
local AVAILABLE, SCHEDULED, RUNNING = KEYS[1], KEYS[2], KEYS[3]
local FINISHED = { succeeded = KEYS[4], dead = KEYS[5], cancelled = KEYS[6] }
local ALL, IDEMPOTENCY, REGISTERED, DUE = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local TAG = ARGV[1]

local function job_key(id)
    return TAG .. ':job:' .. id
end

local function fmt(x)
    return string.format('%.17g', x)
end

local function int(x)
    return string.format('%d', x)
end

local function clock(arg)
    if arg ~= nil and arg ~= '' then
        return tonumber(arg)
    end
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Input checks. Redis does not roll back a script that fails half-way, so a script checks every
-- argument it uses before its first write; these raise an error reply naming the bad one.
local function refuse(what, value)
    error({ err = 'ERR stagecrew: bad ' .. what .. ': ' .. string.sub(tostring(value), 1, 60) })
end

-- A finite number, returned as one (tonumber alone takes 'nan' and 'inf').
local function finite_arg(value, what)
    local x = tonumber(value)
    if x == nil or x ~= x or x == math.huge or x == -math.huge then
        refuse(what, value)
    end
    return x
end

-- A finite number that is not negative.
local function seconds_arg(value, what)
    local x = finite_arg(value, what)
    if x < 0 then
        refuse(what, value)
    end
    return x
end

-- An integer written the way the backend writes one ('12', '-3', never '1e3' or '07'), so it
-- can be compared with a stored field as text and name a key.
local function integer_arg(value, what)
    local x = tonumber(value)
    if x == nil or x ~= math.floor(x) or math.abs(x) >= 9007199254740992
            or string.format('%d', x) ~= value then
        refuse(what, value)
    end
    return x
end

-- '' (the server's clock) or a finite time.
local function now_arg(value)
    if value ~= '' then
        finite_arg(value, 'now')
    end
    return value
end

-- The first half of an available member: run_at in whole microseconds, 17 digits (a damaged
-- run_at counts as 0, so the job is claimed, and dead-lettered, rather than fail the script).
local function due_prefix(run_at)
    local us = math.floor((tonumber(run_at) or 0) * 1000000 + 0.5)
    if us < 0 then
        us = 0
    elseif us > 99999999999999999 then
        us = 99999999999999999
    end
    return string.format('%017d:', us)
end

-- `id` is a string of digits without leading zeros.
local function due_member(run_at, id)
    return due_prefix(run_at) .. string.char(48 + #id) .. id
end

-- ZADD/ZREM/HSET with many arguments, in slices that fit Lua's stack.
local function call_many(command, key, args)
    local n = #args
    for first = 1, n, 4000 do
        local last = math.min(first + 3999, n)
        redis.call(command, key, unpack(args, first, last))
    end
end

local function id_of_member(member)
    return string.sub(member, 20)
end

local function make_available(id, priority, run_at)
    redis.call('ZADD', AVAILABLE, tonumber(priority) or 0, due_member(run_at, id))
end

-- Remove a job from the index of `state`; `run_at` is needed for waiting jobs only.
local function unindex(id, state, run_at)
    if state == 'available' then
        redis.call('ZREM', AVAILABLE, due_member(run_at, id))
    elseif state == 'scheduled' then
        if redis.call('ZREM', SCHEDULED, id) == 0 then
            redis.call('ZREM', DUE, due_member(run_at, id))
        end
    elseif state == 'running' then
        redis.call('ZREM', RUNNING, id)
    elseif FINISHED[state] then
        redis.call('ZREM', FINISHED[state], id)
    end
end

-- `errors` is the stored JSON array (or false when absent); `entry` one JSON object.
local function append_error(errors, entry)
    if not errors or errors == '' or errors == '[]' then
        return '[' .. entry .. ']'
    end
    return string.sub(errors, 1, -2) .. ',' .. entry .. ']'
end

local function wake()
    redis.call('PUBLISH', TAG .. ':wake', '1')
end

-- Delete a finished job and everything that points at it.
local function delete_job(id, state, key)
    redis.call('DEL', job_key(id))
    unindex(id, state, nil)
    redis.call('ZREM', ALL, id)
    if key and redis.call('HGET', IDEMPOTENCY, key) == id then
        redis.call('HDEL', IDEMPOTENCY, key)
    end
end

-- A JobFilter as JSON: {"states": [...], "tasks": [...], "ids": [...], "before_id": n,
-- "finished_before": t}; absent or empty fields match everything. Returns a predicate over
-- (id, state, task, finished_at).
local function job_filter(text)
    local f = cjson.decode(text)
    local states, tasks, ids = nil, nil, nil
    if f.states and #f.states > 0 then
        states = {}
        for _, s in ipairs(f.states) do states[s] = true end
    end
    if f.tasks and #f.tasks > 0 then
        tasks = {}
        for _, t in ipairs(f.tasks) do tasks[t] = true end
    end
    if f.ids and #f.ids > 0 then
        ids = {}
        for _, i in ipairs(f.ids) do ids[int(i)] = true end
    end
    local before_id = f.before_id
    local finished_before = f.finished_before
    if before_id == cjson.null then before_id = nil end
    if finished_before == cjson.null then finished_before = nil end
    return function(id, state, task, finished_at)
        if states and not states[state] then return false end
        if tasks and not tasks[task] then return false end
        if ids and not ids[id] then return false end
        if before_id and tonumber(id) >= before_id then return false end
        if finished_before then
            if not finished_at or tonumber(finished_at) >= finished_before then return false end
        end
        return true
    end
end
