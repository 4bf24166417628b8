#!lua flags=allow-oom
-- claim_capped: claim.lua for a claim that carries concurrency caps (backends/caps.py), over
-- one or more queues in one atomic step: count the running jobs with a live lease (score in
-- T:running after now) against the caps, move each queue's due scheduled jobs to T:due, then
-- walk the waiting jobs of every claimed queue in claim order (priority, order_at, id: the
-- members of T:available and T:due merged) and claim each one whose caps all have a free
-- slot, counting it against the caps of the jobs after it; a job whose cap is full is passed
-- over untouched (no write at all) and the walk goes on behind it. Counting and claiming are
-- one script, so concurrent claimers never exceed a cap together.
--
-- Scope. 'store' (a single Redis): task and key caps count the running jobs of every queue
--   in {P}:queues, whose keys this script names itself (T from the queue's name, as keys.py
--   does), and the claimed queues may be several. 'queue' (the Cluster layout): one queue,
--   the one of KEYS, whose running jobs alone are counted, so that the script touches one
--   slot; caps then hold within each queue (keys.py, docs/redis.md).
-- The walk examines at most ARGV[7] waiting entries per call (a bound on the script's time):
--   a job behind more passed-over jobs than that waits until enough of those are claimed.
--   A queue whose own cap is full is left out of the walk at once.
--
-- KEYS (keys.py): KEYS of the first claimed queue (its T is ARGV[1]). Reads {P}:queues (scope
--   'store'); of every counted queue T:running (ZRANGEBYSCORE after now) and its jobs' hashes
--   (task, concurrency_key), when a task or key cap is sent; of every claimed queue: reads
--   T:paused, reads and writes T:scheduled, T:due, T:available, T:running, the claimed jobs'
--   hashes (as claim.lua), T:wake (a token, when this claim took `limit` jobs and more wait).
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] worker id; ARGV[4] limit; ARGV[5] lease
--   seconds; ARGV[6] the most scheduled jobs to move to T:due per queue; ARGV[7] the most
--   waiting entries to examine; ARGV[8] P, the key prefix; ARGV[9] scope, 'store' or 'queue';
--   ARGV[10] m, the number of claimed queues (1 for 'queue'), then their m names (the first
--   one's T is ARGV[1]); then the task caps: a count, then (task, cap) pairs; the queue caps,
--   the same way; the key caps (task, cap: the cap of each key a job of that task has).
-- Returns one reply per claimed queue, in the order given, each as claim.lua's: {now,
--   lease_expires_at, then 13 per claimed job}.
-- validates: now, worker id, limit (whole), lease seconds (finite, >= 0), the promotion batch
--   and the walk bound (whole, >= 0 and >= 1), the prefix (no braces), the scope, the queue
--   count and names (each once; T of the first is ARGV[1]), each cap table's count, names (non-empty)
--   and caps (whole, >= 1), and the argument count.
-- Every argument is checked before the first write (see _lib.lua).
local now = clock(ARGV[2])
if ARGV[3] == nil or ARGV[3] == '' then
    refuse('worker id', "''")
end
local limit = integer_arg(ARGV[4], 'limit')
local lease_s = fmt(now + seconds_arg(ARGV[5], 'lease seconds'))
local promote = integer_arg(ARGV[6], 'promotion batch', 0)
local budget = integer_arg(ARGV[7], 'walk bound', 1)
local prefix = ARGV[8]
if type(prefix) ~= 'string' or prefix == '' or string.find(prefix, '[{}]') then
    refuse('prefix', prefix)
end
local scope = ARGV[9]
if scope ~= 'store' and scope ~= 'queue' then
    refuse('scope', scope)
end
local m = integer_arg(ARGV[10], 'queue count', 1)
if (scope == 'queue' and m ~= 1) or #ARGV < 10 + m then
    refuse('queue count', ARGV[10])
end

-- T of a queue, as keys.py names it: its name percent-encoded, every byte but A-Z a-z 0-9 _.-~
local function tag_of(name)
    local encoded = string.gsub(name, '[^A-Za-z0-9_.~-]', function(c)
        return string.format('%%%02X', string.byte(c))
    end)
    return '{' .. prefix .. ':' .. encoded .. '}'
end

local names, tags, seen = {}, {}, {}
for q = 1, m do
    local name = ARGV[10 + q]
    if type(name) ~= 'string' or name == '' or seen[name] then
        refuse('queue name', name)
    end
    names[q], tags[q], seen[name] = name, tag_of(name), true
end
if tags[1] ~= TAG then
    refuse('queue name', names[1])
end

-- A cap table from ARGV[at]: a count, then (name, cap) pairs. Returns it and the next index.
local function caps_arg(at, what)
    local n = integer_arg(ARGV[at], what .. ' count', 0)
    if #ARGV < at + 2 * n then
        refuse(what .. ' count', ARGV[at])
    end
    local caps = {}
    for i = 1, n do
        local name = ARGV[at + 2 * i - 1]
        if name == '' then
            refuse(what .. ' name', "''")
        end
        caps[name] = integer_arg(ARGV[at + 2 * i], what, 1)
    end
    return caps, at + 2 * n + 1, n
end
local task_caps, at, task_count = caps_arg(11 + m, 'task cap')
local queue_caps, key_caps, key_count
queue_caps, at = caps_arg(at, 'queue cap')
key_caps, at, key_count = caps_arg(at, 'key cap')
if #ARGV ~= at - 1 then
    refuse('argument count', #ARGV)
end
local now_s = fmt(now)

-- The slots held now: running jobs whose lease expires after now.
local running_tasks, running_queues, running_keys = {}, {}, {}
local after_now = '(' .. now_s
for q = 1, m do
    if queue_caps[names[q]] then
        running_queues[names[q]] = redis.call('ZCOUNT', tags[q] .. ':running', after_now, '+inf')
    end
end
if task_count > 0 or key_count > 0 then
    local counted = { TAG }
    if scope == 'store' then
        counted = {}
        for _, name in ipairs(redis.call('SMEMBERS', '{' .. prefix .. '}:queues')) do
            counted[#counted + 1] = tag_of(name)
        end
    end
    for _, tag in ipairs(counted) do
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', tag .. ':running', after_now, '+inf')) do
            local f = redis.call('HMGET', tag .. ':job:' .. id, 'task', 'concurrency_key')
            if f[1] and task_caps[f[1]] then
                running_tasks[f[1]] = (running_tasks[f[1]] or 0) + 1
            end
            if f[2] and f[2] ~= '' then
                running_keys[f[2]] = (running_keys[f[2]] or 0) + 1
            end
        end
    end
end

-- The rule (caps.py Running.admits / take).
local function queue_full(name)
    local cap = queue_caps[name]
    return cap ~= nil and running_queues[name] >= cap
end
local function admits(task, name, key)
    local cap = task_caps[task]
    if cap and (running_tasks[task] or 0) >= cap then
        return false
    end
    if queue_full(name) then
        return false
    end
    if key then
        cap = key_caps[task]
        if cap and (running_keys[key] or 0) >= cap then
            return false
        end
    end
    return true
end
local function take(task, name, key)
    if task_caps[task] then
        running_tasks[task] = (running_tasks[task] or 0) + 1
    end
    if queue_caps[name] then
        running_queues[name] = running_queues[name] + 1
    end
    if key then
        running_keys[key] = (running_keys[key] or 0) + 1
    end
end

-- Writes from here on. Each claimed queue that is not paused: its due scheduled jobs to T:due.
local open = {}
for q = 1, m do
    local tag = tags[q]
    if redis.call('EXISTS', tag .. ':paused') == 0 then
        open[#open + 1] = q
        local scheduled, due = tag .. ':scheduled', tag .. ':due'
        local became_due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now_s, 'LIMIT', 0,
            promote)
        if #became_due > 0 then
            local moved = {}
            for _, id in ipairs(became_due) do
                local k = tag .. ':job:' .. id
                local f = redis.call('HMGET', k, 'priority', 'run_at')
                if f[1] or redis.call('EXISTS', k) == 1 then
                    moved[#moved + 1] = tonumber(f[1]) or 0
                    moved[#moved + 1] = due_member(f[2], id)
                end
            end
            call_many('ZREM', scheduled, became_due)
            if #moved > 0 then
                call_many('ZADD', due, moved)
            end
        end
    end
end

local replies = {}
for q = 1, m do
    replies[q] = { now_s, lease_s }
end
if limit <= 0 or #open == 0 then
    return replies
end

-- The walk: one cursor per waiting index of each open queue, read in pages, merged in claim
-- order. Members are compared by their numbers (see claim.lua).
local PAGE = 100
local cursors = {}
for _, q in ipairs(open) do
    for _, index in ipairs({ tags[q] .. ':available', tags[q] .. ':due' }) do
        cursors[#cursors + 1] = { q = q, index = index, page = {}, at = 1, start = 0, done = false }
    end
end
local function head(c)
    if c.at > #c.page then
        if c.done then
            return nil
        end
        c.page = redis.call('ZRANGE', c.index, c.start, c.start + PAGE - 1, 'WITHSCORES')
        c.start, c.at = c.start + PAGE, 1
        if #c.page < 2 * PAGE then
            c.done = true
        end
        if #c.page == 0 then
            return nil
        end
    end
    return c.page[c.at], tonumber(c.page[c.at + 1])
end
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

local picked, gone = {}, {}
local examined = 0
while #picked < limit and examined < budget do
    local best, best_member, best_priority = nil, nil, nil
    for _, c in ipairs(cursors) do
        if not queue_full(names[c.q]) then
            local member, priority = head(c)
            if member and (best == nil or before(priority, member, best_priority, best_member)) then
                best, best_member, best_priority = c, member, priority
            end
        end
    end
    if best == nil then
        break
    end
    best.at = best.at + 2
    examined = examined + 1
    local q = best.q
    local id = id_of_member(best_member)
    local k = tags[q] .. ':job:' .. id
    local f = redis.call('HMGET', k, 'task', 'concurrency_key')
    local key = f[2]
    if key == '' then
        key = false
    end
    if not f[1] and redis.call('EXISTS', k) == 0 then
        -- a member whose hash is gone is dropped, as claim.lua drops it
        gone[#gone + 1] = { index = best.index, member = best_member }
    elseif admits(f[1], names[q], key) then
        take(f[1], names[q], key)
        picked[#picked + 1] = { q = q, index = best.index, member = best_member, k = k, id = id }
    end
end

-- Claim what was picked, as claim.lua does, each in its own queue's keys.
local removed, running = {}, {}
local function remove(index, member)
    removed[index] = removed[index] or {}
    removed[index][#removed[index] + 1] = member
end
for _, g in ipairs(gone) do
    remove(g.index, g.member)
end
local worker = ARGV[3]
for _, p in ipairs(picked) do
    remove(p.index, p.member)
    local f = redis.call('HMGET', p.k, 'task', 'payload', 'max_attempts', 'priority',
        'enqueued_at', 'run_at', 'attempt', 'lost', 'claims', 'snoozes', 'workflow_id')
    local attempt = math.floor(tonumber(f[7]) or 0) + 1
    local token = math.floor(tonumber(f[9]) or 0) + 1
    redis.call('HSET', p.k, 'state', 'running', 'attempt', attempt, 'claims', token,
        'lease_owner', worker, 'lease_expires_at', lease_s, 'started_at', now_s)
    local key = tags[p.q] .. ':running'
    running[key] = running[key] or {}
    running[key][#running[key] + 1] = lease_s
    running[key][#running[key] + 1] = p.id
    local out = replies[p.q]
    out[#out + 1] = p.member
    out[#out + 1] = attempt
    for n = 1, 6 do
        out[#out + 1] = f[n]
    end
    out[#out + 1] = tonumber(f[8]) or 0
    out[#out + 1] = token
    out[#out + 1] = tonumber(f[10]) or 0
    out[#out + 1] = f[11]
    out[#out + 1] = f[11] and redis.call('HGET', p.k, 'workflow_input')
end
for index, members in pairs(removed) do
    call_many('ZREM', index, members)
end
for key, entries in pairs(running) do
    call_many('ZADD', key, entries)
end
-- Took as many as asked: pass the wake-up on for each claimed queue where more are waiting.
if #picked >= limit then
    for _, q in ipairs(open) do
        local tag = tags[q]
        if redis.call('ZCARD', tag .. ':available') > 0 or redis.call('ZCARD', tag .. ':due') > 0 then
            if redis.call('LLEN', tag .. ':wake') == 0 then
                redis.call('RPUSH', tag .. ':wake', '1')
            end
        end
    end
end
return replies
