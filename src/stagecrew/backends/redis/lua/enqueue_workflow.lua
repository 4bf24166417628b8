#!lua
-- enqueue_workflow: store a workflow's record and every member job in one queue, in one atomic
-- step. Members of step 0 are available now; the others are held: scheduled at the held time
-- (ARGV[6]), which no claim reaches, until the fan-in (`fan_in` in _lib.lua) releases their step.
--
-- KEYS (keys.py): reads KEYS[9] registered; writes T:workflow:<id> (HSET: status, step, shape,
--   on_failure, created_at, members, stored), the members' hashes T:job:<id> (HSET, with
--   workflow_id, workflow_step, workflow_index), KEYS[1] available, KEYS[2] scheduled, KEYS[7]
--   all; leaves a wake-up token on T:wake.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] workflow id; ARGV[4] shape (JSON: [[is a
--   group (0/1), size], ...]); ARGV[5] on_failure (fail | continue); ARGV[6] the held time;
--   ARGV[7] n, the number of members; then 7 per member, by step and index: id (reserved by
--   the caller), task, payload, priority, max_attempts, step, index.
-- Returns {0} when the queue is not registered yet (nothing written: register it, call again);
--   {-1, id} when a reserved id is taken already, {-2} when the workflow id is (nothing
--   written); else {1}.
-- validates: now, the workflow id, the shape (JSON, sizes that add up to n), on_failure, the held
--   time, n and the argument count; per member its id, priority (whole), max_attempts (whole,
--   >= 1), step and index (within the shape).
-- Nothing is written before every argument was checked.
local now = clock(ARGV[2])
local now_s = fmt(now)
local workflow = ARGV[3]
if not string.match(workflow, '^[%w_-]+$') or #workflow > 64 then
    refuse('workflow id', workflow)
end
local ok, shape = pcall(cjson.decode, ARGV[4])
if not ok or type(shape) ~= 'table' or #shape == 0 then
    refuse('workflow shape', ARGV[4])
end
if ARGV[5] ~= 'fail' and ARGV[5] ~= 'continue' then
    refuse('on_failure', ARGV[5])
end
local held_s = fmt(finite_arg(ARGV[6], 'held time'))
local n = integer_arg(ARGV[7], 'member count', 1)
local BASE, WIDTH = 7, 7
if #ARGV ~= BASE + n * WIDTH then
    refuse('argument count', #ARGV)
end
local total = 0
for _, s in ipairs(shape) do
    if type(s) ~= 'table' or type(s[2]) ~= 'number' or s[2] < 1 then
        refuse('workflow shape', ARGV[4])
    end
    total = total + s[2]
end
if total ~= n then
    refuse('workflow shape (its sizes add up to ' .. total .. ')', n)
end
local members = {}
for i = 1, #shape do
    members[i] = {}
end
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    id_arg(ARGV[o + 1], 'job id')
    integer_arg(ARGV[o + 4], 'priority', -math.huge)
    integer_arg(ARGV[o + 5], 'max_attempts', 1)
    local step = integer_arg(ARGV[o + 6], 'workflow step', 0)
    local index = integer_arg(ARGV[o + 7], 'workflow index', 0)
    if step >= #shape or index >= shape[step + 1][2] then
        refuse('workflow place', ARGV[o + 6] .. '/' .. ARGV[o + 7])
    end
    members[step + 1][index + 1] = ARGV[o + 1]
end
if redis.call('EXISTS', REGISTERED) == 0 then
    return { 0 }
end
local record = TAG .. ':workflow:' .. workflow
if redis.call('EXISTS', record) == 1 then
    return { -2 }
end
for i = 1, n do
    local id = ARGV[BASE + (i - 1) * WIDTH + 1]
    if redis.call('EXISTS', job_key(id)) == 1 then
        return { -1, id }
    end
end
local available, scheduled, all = {}, {}, {}
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local id, step = ARGV[o + 1], ARGV[o + 6]
    local state, run_at_s = 'available', now_s
    if step ~= '0' then
        state, run_at_s = 'scheduled', held_s
    end
    redis.call('HSET', job_key(id), 'task', ARGV[o + 2], 'state', state, 'payload', ARGV[o + 3],
        'priority', ARGV[o + 4], 'run_at', run_at_s, 'max_attempts', ARGV[o + 5],
        'enqueued_at', now_s, 'workflow_id', workflow, 'workflow_step', step,
        'workflow_index', ARGV[o + 7])
    if state == 'available' then
        available[#available + 1] = ARGV[o + 4]
        available[#available + 1] = due_member(now, id)
    else
        scheduled[#scheduled + 1] = held_s
        scheduled[#scheduled + 1] = id
    end
    all[#all + 1] = id
    all[#all + 1] = id
end
redis.call('HSET', record, 'status', 'running', 'step', '0', 'shape', ARGV[4],
    'on_failure', ARGV[5], 'created_at', now_s, 'members', cjson.encode(members), 'stored', n)
call_many('ZADD', ALL, all)
if #scheduled > 0 then
    call_many('ZADD', SCHEDULED, scheduled)
end
if #available > 0 then
    call_many('ZADD', AVAILABLE, available)
    wake()
end
return { 1 }
