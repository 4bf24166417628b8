-- _lib: helpers shared by the scripts. The loader (scripts.py) inserts this preamble and the
-- functions a script calls right after the script's first line (its #!lua shebang).
--
-- Every script runs on ONE queue and receives the same KEYS, in the order of `QueueKeys.keys`:
-- the key layout (each key, its type, its KEYS index) is documented once, in keys.py. T is the
-- queue's hash tag, passed again as ARGV[1]: job hashes are named T:job:<id>, the wake-up
-- list T:wake. A script's own header names the keys it touches. The limit-state scripts
-- (read_limits, swap_limits, list_limits, prune_limits) are the exception: they run on no
-- queue but on the store's limit records, KEYS[1] {P}:limits and KEYS[2] {P}:limits:expiry,
-- with the store's own tag {P} as ARGV[1] (one slot, that of every {P}: key).
--
-- Times are seconds since the epoch, written with %.17g so that a double survives the round trip.
-- A "now" argument of '' means the Redis server's clock (TIME); tests pass a fake time instead.
--
-- THE RULE FOR EVERY SCRIPT: check every input before the first write. Redis does not roll a
-- script back when it fails part way; whatever it wrote before the error stays (an orphan job
-- hash, an idempotency entry no index holds). So each script reads and checks all of its ARGV
-- (numbers finite, counts whole, names from their known set, JSON well formed) with the helpers
-- below before it changes anything, and its header says what it checks in a "-- validates:"
-- line. A failed check is an error reply ("ERR stagecrew: invalid ..."), nothing written.
local AVAILABLE, SCHEDULED, RUNNING = KEYS[1], KEYS[2], KEYS[3]
local FINISHED = { succeeded = KEYS[4], dead = KEYS[5], cancelled = KEYS[6] }
local ALL, IDEMPOTENCY, REGISTERED, DUE = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local FAIRNESS, UNIQUE = KEYS[12], KEYS[13]
local TAG = ARGV[1]

local function job_key(id)
    return TAG .. ':job:' .. id
end

local function fmt(x)
    return string.format('%.17g', x)
end

-- An entry of an index of keys (KEYS[8] idempotency, KEYS[13] unique): '<id> <T>', the job and
-- its queue's tag. On a single Redis one index serves every queue, so a script must find the
-- hash of a job of another queue; an entry without the tag (an older layout's) names a job of
-- the script's own queue.
local function index_entry(id)
    return id .. ' ' .. TAG
end

-- The job id an index entry names, and the key of that job's hash.
local function entry_job(entry)
    local space = string.find(entry, ' ', 1, true)
    if not space then
        return entry, TAG .. ':job:' .. entry
    end
    local id = string.sub(entry, 1, space - 1)
    return id, string.sub(entry, space + 1) .. ':job:' .. id
end

-- Whether the index entry `entry` names the job `id` of this queue.
local function entry_names(entry, id)
    return entry == index_entry(id) or entry == id
end

local function int(x)
    return string.format('%d', x)
end

-- Fail the script, writing nothing (see THE RULE above): an error reply naming the argument.
local function refuse(what, value)
    error({ err = 'ERR stagecrew: bad ' .. what .. ': ' .. string.sub(tostring(value), 1, 100) })
end

-- A finite number (tonumber accepts 'nan' and 'inf'; NaN is the one value unequal to itself).
local function finite_arg(value, what)
    local x = tonumber(value)
    if x == nil or x ~= x or x == math.huge or x == -math.huge then
        refuse(what, value)
    end
    return x
end

-- An integer, at least `least` if given. One passed as text must be written the way the backend
-- writes one ('12', '-3', never '1e3' or '07'), so it can be compared with a stored field as
-- text and name a key.
local function integer_arg(value, what, least)
    local x = tonumber(value)
    if x == nil or x ~= math.floor(x) or math.abs(x) >= 9007199254740992
            or (type(value) == 'string' and string.format('%d', x) ~= value)
            or (least ~= nil and x < least) then
        refuse(what, value)
    end
    return x
end

-- A job id: a string of digits (an id no job has is harmless: nothing is written for it).
local function id_arg(value, what)
    if type(value) ~= 'string' or not string.match(value, '^[0-9]+$') or #value > 19 then
        refuse(what, value)
    end
    return value
end

-- "now": '' for the server's clock, else a finite time (a test's fake clock).
local function clock(arg)
    if arg ~= nil and arg ~= '' then
        return finite_arg(arg, 'now')
    end
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- A finite number that is not negative.
local function seconds_arg(value, what)
    local x = finite_arg(value, what)
    if x < 0 then
        refuse(what, value)
    end
    return x
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

-- A job waiting again (a hand-back, a rescue, a re-run) is ordered by its run_at, keyed or not.
local function make_available(id, priority, run_at)
    redis.call('ZADD', AVAILABLE, tonumber(priority) or 0, due_member(run_at, id))
    redis.call('HDEL', job_key(id), 'order_at')
end

-- Remove a job from the index of `state`; `run_at` is needed for waiting jobs only, and
-- `order_at` (the hash's field: nil, false or '' for none) for an available one.
local function unindex(id, state, run_at, order_at)
    if state == 'available' then
        if order_at and order_at ~= '' then
            run_at = order_at
        end
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

-- Wake one idle worker of the queue: a token on the list T:wake, which holds one at most. A
-- worker waiting on it (BLPOP) takes it as soon as this script ends; one that is not waiting yet
-- finds it there when it does, so no wake-up is missed.
local function wake()
    local key = TAG .. ':wake'
    if redis.call('LLEN', key) == 0 then
        redis.call('RPUSH', key, '1')
    end
end

-- Tell whoever waits for a job to finish (wait_finished) that the jobs `ids` are final now: one
-- message per script call on T:finished, sent after the script's writes; none when `ids` is
-- empty. The message is the ids separated by spaces, or '' ("any job of this queue") past
-- 1000 ids, so that a large batch never makes a large message.
local function announce_finished(ids)
    if #ids == 0 then
        return
    end
    local message = ''
    if #ids <= 1000 then
        message = table.concat(ids, ' ')
    end
    redis.call('PUBLISH', TAG .. ':finished', message)
end

-- What the fan-in passes on for one member of a step (backends/workflows.py `decide`): its
-- result as stored JSON text (`value`), or an outcome object (`on_failure = continue`).
local function member_outcome(state, result, errors, as_outcome)
    if result == nil or result == false or result == '' then
        result = 'null'
    end
    if not as_outcome then
        return result
    end
    if state == 'succeeded' then
        return '{"state":"succeeded","result":' .. result .. '}'
    end
    local err = 'null'
    local ok, list = pcall(cjson.decode, errors or '[]')
    if ok and type(list) == 'table' and type(list[#list]) == 'table' then
        local last = list[#list]
        err = cjson.encode({ type = tostring(last.type or ''), message = tostring(last.message or '') })
    end
    return '{"state":' .. cjson.encode(state) .. ',"error":' .. err .. '}'
end

-- The fan-in (backends/workflows.py): advance workflow `workflow` as far as the members of its
-- current step allow, in the calling script (so in the same atomic step as the write that made
-- a member final). Reads and writes T:workflow:<id> (status, step, result, finished_at); reads
-- the current step's member hashes; releases the next step's held members (scheduled at the
-- held time: out of KEYS[2] scheduled, into KEYS[1] available, with `workflow_input`). Returns
-- true when it released members (the caller wakes a worker).
local function fan_in(workflow, now_s)
    local record = TAG .. ':workflow:' .. workflow
    local released = false
    while true do
        local w = redis.call('HMGET', record, 'status', 'step', 'shape', 'on_failure', 'members')
        if not w[1] or (w[1] ~= 'running' and w[1] ~= 'failed') then
            return released
        end
        local step = tonumber(w[2])
        local shape, members = cjson.decode(w[3]), cjson.decode(w[5])
        local continue = w[4] == 'continue'
        local group = shape[step + 1][1] == 1
        local ids = members[step + 1]
        local done, failed = true, false
        local passed, values = {}, {}
        for i, id in ipairs(ids) do
            local f = redis.call('HMGET', job_key(id), 'state', 'result', 'errors')
            local state = f[1]
            if state == 'succeeded' or state == 'dead' or state == 'cancelled' then
                if state ~= 'succeeded' then
                    failed = true
                end
                passed[i] = member_outcome(state, f[2], f[3], continue)
                values[i] = member_outcome(state, f[2], f[3], false)
            else
                done = false
            end
        end
        if failed and not continue then
            redis.call('HSET', record, 'status', 'failed')
            return released
        end
        if not done then
            return released
        end
        local output = passed[1]
        if group then
            output = '[' .. table.concat(passed, ',') .. ']'
        end
        if step + 1 >= #shape then
            local status, result = 'succeeded', output
            if failed then
                status = 'failed'
            else
                result = values[1]
                if group then
                    result = '[' .. table.concat(values, ',') .. ']'
                end
            end
            redis.call('HSET', record, 'status', status, 'result', result, 'finished_at', now_s)
            return released
        end
        redis.call('HSET', record, 'status', 'running', 'step', step + 1)
        for _, id in ipairs(members[step + 2]) do
            local k = job_key(id)
            local f = redis.call('HMGET', k, 'state', 'priority')
            if f[1] == 'scheduled' then
                redis.call('ZREM', SCHEDULED, id)
                redis.call('HSET', k, 'state', 'available', 'run_at', now_s, 'workflow_input',
                    output)
                make_available(id, f[2], tonumber(now_s))
                released = true
            end
        end
    end
end

-- The "worker lost" error's fixed fields, ARGV[i] to ARGV[i + 3] (records.WORKER_LOST.params()
-- in Python, where its text is decided): type, message (one %s for the lease owner), kind, and
-- the kind when a cancellation was pending. Checked like every argument, before any write.
local function lost_record_arg(i)
    local record = { type = ARGV[i], message = ARGV[i + 1], kind = ARGV[i + 2],
        cancelled_kind = ARGV[i + 3] }
    for _, name in ipairs({ 'type', 'message', 'kind', 'cancelled_kind' }) do
        if type(record[name]) ~= 'string' or record[name] == '' then
            refuse('lost worker ' .. name, record[name])
        end
    end
    if not string.find(record.message, '%s', 1, true)
            or not pcall(string.format, record.message, '') then
        refuse('lost worker message', record.message)
    end
    return record
end

-- Settle one running job whose worker is lost (its lease expired, or its supervisor saw it die),
-- as transitions.after_lease_expired decides: back to available, or dead, or cancelled, with the
-- "worker lost" error `record` (from lost_record_arg) filled in with the lease owner ('None'
-- when there is none), the attempt and now. `f` holds its fields state, attempt, max_attempts,
-- lost, cancel_requested, lease_owner, errors, priority, run_at and workflow_id (in that order); the caller
-- has taken it out of T:running. Counts the job in `settled[state]`, for the state it settled in
-- (`settled` from new_settled), and lists it in `settled.final` when that state is final.
local function settle_lost(id, f, max_lost, now_s, record, settled)
    local k = job_key(id)
    local attempt = tonumber(f[2]) or 0
    local lost = (tonumber(f[4]) or 0) + 1
    local target, kind
    if f[5] == '1' then
        target, kind = 'cancelled', record.cancelled_kind
    elseif attempt >= (tonumber(f[3]) or 0) or lost >= max_lost then
        target, kind = 'dead', record.kind
    else
        target, kind = 'available', record.kind
    end
    local message = string.format(record.message, f[6] or 'None')
    local entry = '{"attempt":' .. int(attempt) .. ',"at":' .. now_s .. ',"kind":'
        .. cjson.encode(kind) .. ',"type":' .. cjson.encode(record.type) .. ',"message":'
        .. cjson.encode(message) .. ',"traceback":""}'
    redis.call('HSET', k, 'state', target, 'lost', lost, 'errors', append_error(f[7], entry))
    redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
    if target == 'available' then
        make_available(id, f[8], f[9])
    else
        redis.call('HSET', k, 'finished_at', now_s)
        redis.call('ZADD', FINISHED[target], now_s, id)
    end
    settled[target] = settled[target] + 1
    if target ~= 'available' then
        settled.final[#settled.final + 1] = id
        if f[10] and f[10] ~= '' then
            settled.workflows[f[10]] = true
        end
    end
end

-- What settle_lost has settled so far in one script call: counts per state, the final ids, the
-- workflows of members that ended dead or cancelled.
local function new_settled()
    return { available = 0, dead = 0, cancelled = 0, final = {}, workflows = {} }
end

-- After the last settle_lost of a script call: run the fan-in of the workflows whose members
-- ended (`fan_in`: reads and writes T:workflow:<id> and its members' hashes), wake the workers
-- when a job is available again, and tell the waiters which jobs are final.
local function announce_settled(settled, now_s)
    local due = settled.available > 0
    for workflow in pairs(settled.workflows) do
        if fan_in(workflow, now_s) then
            due = true
        end
    end
    if due then
        wake()
    end
    announce_finished(settled.final)
end

-- The jobs a requeue or purge looks at, and the skip to start from: the job ids ARGV[at + 3...]
-- when given; else up to ARGV[at + 2] entries of the index of the state ARGV[at] (one of
-- `states`), from entry ARGV[at + 1] on, finished before the filter `f`'s bound if it has one.
local function scan_candidates(f, at, states)
    if #ARGV >= at + 3 then
        local candidates = {}
        for i = at + 3, #ARGV do
            candidates[#candidates + 1] = id_arg(ARGV[i], 'job id')
        end
        return candidates, 0
    end
    if not states[ARGV[at]] then
        refuse('state', ARGV[at])
    end
    local skip = integer_arg(ARGV[at + 1], 'skip', 0)
    local count = integer_arg(ARGV[at + 2], 'count', 1)
    local upper = '+inf'
    if f.finished_before then
        upper = '(' .. fmt(f.finished_before)
    end
    return redis.call('ZRANGEBYSCORE', FINISHED[ARGV[at]], '-inf', upper, 'LIMIT', skip, count),
        skip
end

-- The id of the job holding the unique key `unique` (KEYS[13] names the job that took it last;
-- it holds it while its state is one of its unique_states), or nil.
local function unique_holder(unique)
    local entry = redis.call('HGET', UNIQUE, unique)
    if not entry then
        return nil
    end
    local id, hash = entry_job(entry)
    local f = redis.call('HMGET', hash, 'state', 'unique_states')
    if f[1] and f[2] and string.find(',' .. f[2] .. ',', ',' .. f[1] .. ',', 1, true) then
        return id
    end
    return nil
end

-- Delete a finished job and everything that points at it: its steps (T:steps:<id>), its unique
-- key's entry, and, for the last stored member of a workflow, the workflow's record
-- T:workflow:<id> (its `stored` count reaches 0).
local function delete_job(id, state, key)
    local f = redis.call('HMGET', job_key(id), 'unique_key', 'workflow_id')
    local unique, workflow = f[1], f[2]
    if unique and entry_names(redis.call('HGET', UNIQUE, unique), id) then
        redis.call('HDEL', UNIQUE, unique)
    end
    if workflow and workflow ~= '' then
        local record = TAG .. ':workflow:' .. workflow
        if redis.call('HINCRBY', record, 'stored', -1) <= 0 then
            redis.call('DEL', record)
        end
    end
    redis.call('DEL', job_key(id), TAG .. ':steps:' .. id)
    unindex(id, state, nil)
    redis.call('ZREM', ALL, id)
    if key and entry_names(redis.call('HGET', IDEMPOTENCY, key), id) then
        redis.call('HDEL', IDEMPOTENCY, key)
    end
end

-- A JobFilter as JSON: {"states": [...], "tasks": [...], "ids": [...], "before_id": n,
-- "finished_before": t}; absent or empty fields match everything. Returns the decoded filter
-- (fields checked, nulls as nil) and a predicate over (id, state, task, finished_at). Every
-- field is checked here, before the caller writes anything, so that the predicate cannot fail
-- half way through a batch.
local function job_filter(text)
    local ok, f = pcall(cjson.decode, text)
    if not ok or type(f) ~= 'table' then
        refuse('filter', text)
    end
    local function list(name, check)
        local values = f[name]
        if values == nil or values == cjson.null then
            return nil
        end
        if type(values) ~= 'table' then
            refuse('filter ' .. name, text)
        end
        if #values == 0 then
            return nil
        end
        local set = {}
        for _, v in ipairs(values) do
            set[check(v)] = true
        end
        return set
    end
    local function text_value(v)
        if type(v) ~= 'string' then
            refuse('filter', text)
        end
        return v
    end
    local states = list('states', text_value)
    local tasks = list('tasks', text_value)
    local ids = list('ids', function(v) return int(integer_arg(v, 'filter ids', 0)) end)
    local before_id = f.before_id
    local finished_before = f.finished_before
    if before_id == cjson.null then before_id = nil end
    if finished_before == cjson.null then finished_before = nil end
    if before_id ~= nil then
        before_id = integer_arg(before_id, 'filter before_id', 0)
    end
    if finished_before ~= nil then
        finished_before = finite_arg(finished_before, 'filter finished_before')
    end
    f.before_id, f.finished_before = before_id, finished_before
    return function(id, state, task, finished_at)
        if states and not states[state] then return false end
        if tasks and not tasks[task] then return false end
        if ids and not ids[id] then return false end
        if before_id and tonumber(id) >= before_id then return false end
        if finished_before then
            if not finished_at or tonumber(finished_at) >= finished_before then return false end
        end
        return true
    end, f
end

-- A limit record as {P}:limits holds it (limit_states.py): '<version> <expires_at> <value>',
-- the version in digits, expires_at written by fmt, then the value (JSON text) as given.
local function limit_record(version, expires_at, value)
    return version .. ' ' .. expires_at .. ' ' .. value
end

-- The version, expires_at (both as stored, text) and value of the limit record `record` (a
-- field of {P}:limits, or false/nil when absent), or nil when it is absent, expired at `now`
-- or damaged: such a record reads as none.
local function live_limit(record, now)
    if not record then
        return nil
    end
    local first = string.find(record, ' ', 1, true)
    local second = first and string.find(record, ' ', first + 1, true)
    if not second then
        return nil
    end
    local expires_at = string.sub(record, first + 1, second - 1)
    local at = tonumber(expires_at)
    if at == nil or not (at > now) then
        return nil
    end
    return string.sub(record, 1, first - 1), expires_at, string.sub(record, second + 1)
end

-- A limit record's version: digits without a leading zero, at most 19 (below 2**63). Kept as
-- text: a Lua number holds integers exactly only up to 2**53.
local function version_arg(value, what)
    if type(value) ~= 'string' or not string.match(value, '^[1-9][0-9]*$') or #value > 19 then
        refuse(what, value)
    end
    return value
end
