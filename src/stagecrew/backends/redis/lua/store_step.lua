#!lua
-- store_step: store a step's result, the checkpoint or the progress of one running job, fenced
-- by its claim token (the job's `claims` count): nothing is written unless the job is running
-- that claim. Without allow-oom: a store out of memory refuses new step data with an error.
--
-- KEYS (keys.py): KEYS[1..12] are passed as to every script and not touched. Reads the job's
--   hash T:job:<id> (state, claims); writes, by kind: step and state -> T:steps:<id> (HASH,
--   fields "s:<name>" for a step, kept if present, and "state" for the checkpoint, replaced;
--   each value "<seq> <stored_at> <JSON>", seq its order of first storing); progress ->
--   T:job:<id> fields progress and progress_at.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] job id; ARGV[4] claim token;
--   ARGV[5] kind: step | state | progress; ARGV[6] step name ('' unless a step);
--   ARGV[7] the value (JSON text, checked by the front layer).
-- Returns 1 stored (or a step kept its first value), 0 the claim does not hold the job,
--   3 no such job in this queue.
-- validates: the argument count, now, job id and claim token (whole), the kind, a step's name
--   (non-empty), the value (non-empty).
-- Every argument is checked before the first write (see _lib.lua).
if #ARGV ~= 7 then
    refuse('argument count', #ARGV)
end
local now = clock(ARGV[2])
local id = ARGV[3]
integer_arg(id, 'job id')
local token = ARGV[4]
integer_arg(token, 'claim token')
local kind, name, value = ARGV[5], ARGV[6], ARGV[7]
if kind ~= 'step' and kind ~= 'state' and kind ~= 'progress' then
    refuse('kind', kind)
end
if kind == 'step' and name == '' then
    refuse('step name', "''")
end
if value == '' then
    refuse('value', "''")
end
local k = job_key(id)
local f = redis.call('HMGET', k, 'state', 'claims')
if not f[1] then
    return 3
end
if f[1] ~= 'running' or f[2] ~= token then
    return 0
end
if kind == 'progress' then
    redis.call('HSET', k, 'progress', value, 'progress_at', fmt(now))
    return 1
end
local steps = TAG .. ':steps:' .. id
local field = 'state'
if kind == 'step' then
    field = 's:' .. name
    if redis.call('HEXISTS', steps, field) == 1 then
        return 1
    end
end
local seq = redis.call('HLEN', steps) + 1
local old = redis.call('HGET', steps, field)
if old then
    seq = string.match(old, '^(%d+) ')
end
redis.call('HSET', steps, field, seq .. ' ' .. fmt(now) .. ' ' .. value)
return 1
