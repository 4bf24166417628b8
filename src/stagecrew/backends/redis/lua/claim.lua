#!lua flags=allow-oom
-- claim: move the queue's scheduled jobs whose run_at has passed to T:due, then move the first
-- `limit` waiting jobs, in (priority, order_at, id) order over T:available and T:due, straight
-- into the running set with a lease. A claimed job is never only "popped": it is in T:running,
-- scored by its lease expiry, in the same atomic step, so a worker that dies after this returns
-- loses nothing (the rescuer finds it there). Each claim counts one more in the job's `claims`
-- field (absent counts as 0): the new value is the claim's fencing token, which no later claim,
-- hand-back, rescue or re-run from the dead-letter queue ever gives out again.
--
-- A paused queue (T:paused exists) gives out nothing, and the call writes nothing.
--
-- KEYS (keys.py): reads T:paused; reads and writes KEYS[1] available, KEYS[2] scheduled, KEYS[10] due,
--   KEYS[3] running and the claimed jobs' hashes T:job:<id> (state, attempt, claims,
--   lease_owner, lease_expires_at, started_at); T:wake (a token, when this claim took `limit`
--   jobs and more are waiting).
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] worker id; ARGV[4] limit;
--   ARGV[5] lease seconds; ARGV[6] the most scheduled jobs to move to T:due in this call.
-- Returns {now, lease_expires_at, then 13 per claimed job: its member (order_at in µs and
--   the id, see due_member), attempt, task, payload, max_attempts, priority, enqueued_at,
--   run_at, lost, token, snoozes, workflow_id and workflow_input (nil for a job that is no
--   workflow member)}. The member is sent as it is: formatting order_at here cost more than
--   the rest of a job's claim. The input is read only for a workflow member: each field a
--   small hash lacks costs a scan of the whole hash.
-- validates: now, limit (whole), lease seconds (finite, >= 0), the promotion batch (whole).
-- Every argument is checked before the first write (see _lib.lua).
if #ARGV ~= 6 then
    refuse('argument count', #ARGV)
end
local now = clock(ARGV[2])
if ARGV[3] == '' then
    refuse('worker id', "''")
end
local limit = integer_arg(ARGV[4], 'limit')
local lease_s = fmt(now + seconds_arg(ARGV[5], 'lease seconds'))
local promote = integer_arg(ARGV[6], 'promotion batch')
if promote < 0 then
    refuse('promotion batch', ARGV[6])
end
local now_s = fmt(now)
if redis.call('EXISTS', TAG .. ':paused') == 1 then
    return { now_s, lease_s }
end

local became_due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now_s, 'LIMIT', 0, promote)
if #became_due > 0 then
    local moved = {}
    for _, id in ipairs(became_due) do
        local f = redis.call('HMGET', job_key(id), 'priority', 'run_at')
        if f[1] or redis.call('EXISTS', job_key(id)) == 1 then
            moved[#moved + 1] = tonumber(f[1]) or 0
            moved[#moved + 1] = due_member(f[2], id)
        end
    end
    call_many('ZREM', SCHEDULED, became_due)
    if #moved > 0 then
        call_many('ZADD', DUE, moved)
    end
end

local out = { now_s, lease_s }
if limit <= 0 then
    return out
end
-- Merge the heads of the two ordered indexes. Members are compared by their numbers: Lua
-- compares strings with the server's locale, which may not order them byte by byte.
local function before(pa, ma, pd, md)
    if pa ~= pd then
        return pa < pd
    end
    local ra, rd = tonumber(string.sub(ma, 1, 17)), tonumber(string.sub(md, 1, 17))
    if ra ~= rd then
        return ra < rd
    end
    return tonumber(id_of_member(ma)) < tonumber(id_of_member(md))
end
local a = redis.call('ZRANGE', AVAILABLE, 0, limit - 1, 'WITHSCORES')
local d = redis.call('ZRANGE', DUE, 0, limit - 1, 'WITHSCORES')
local taken_a, taken_d, picked = {}, {}, {}
local i, j = 1, 1
while #picked < limit and (i <= #a or j <= #d) do
    local take_a
    if i > #a then
        take_a = false
    elseif j > #d then
        take_a = true
    else
        take_a = before(tonumber(a[i + 1]), a[i], tonumber(d[j + 1]), d[j])
    end
    if take_a then
        taken_a[#taken_a + 1] = a[i]
        picked[#picked + 1] = a[i]
        i = i + 2
    else
        taken_d[#taken_d + 1] = d[j]
        picked[#picked + 1] = d[j]
        j = j + 2
    end
end
if #picked == 0 then
    return out
end
if #taken_a > 0 then
    call_many('ZREM', AVAILABLE, taken_a)
end
if #taken_d > 0 then
    call_many('ZREM', DUE, taken_d)
end
local worker = ARGV[3]
local running = {}
for _, member in ipairs(picked) do
    local id = id_of_member(member)
    local k = job_key(id)
    local f = redis.call('HMGET', k, 'task', 'payload', 'max_attempts', 'priority',
        'enqueued_at', 'run_at', 'attempt', 'lost', 'claims', 'snoozes', 'workflow_id')
    -- a hash missing fields is claimed all the same (the worker dead-letters it); only a
    -- member whose hash is gone is dropped
    if f[1] or redis.call('EXISTS', k) == 1 then
        local attempt = math.floor(tonumber(f[7]) or 0) + 1
        local token = math.floor(tonumber(f[9]) or 0) + 1
        redis.call('HSET', k, 'state', 'running', 'attempt', attempt, 'claims', token,
            'lease_owner', worker, 'lease_expires_at', lease_s, 'started_at', now_s)
        running[#running + 1] = lease_s
        running[#running + 1] = id
        out[#out + 1] = member
        out[#out + 1] = attempt
        for n = 1, 6 do
            out[#out + 1] = f[n]
        end
        out[#out + 1] = tonumber(f[8]) or 0
        out[#out + 1] = token
        out[#out + 1] = tonumber(f[10]) or 0
        out[#out + 1] = f[11]
        out[#out + 1] = f[11] and redis.call('HGET', k, 'workflow_input')
    end
end
if #running > 0 then
    call_many('ZADD', RUNNING, running)
end
-- Took as many as asked and more are waiting: pass the wake-up on to another idle worker (one
-- enqueue of many jobs woke one worker only).
if #picked >= limit and (redis.call('ZCARD', AVAILABLE) > 0 or redis.call('ZCARD', DUE) > 0) then
    wake()
end
return out
