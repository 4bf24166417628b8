#!lua flags=allow-oom
-- ack: record the outcomes of attempts on jobs of one queue, each fenced by (job id, token):
-- only a job still running with that many claims (the claim's fencing token) changes. A retry
-- or hand-back of a job whose cancellation was requested ends it cancelled instead
-- (transitions.after_ack).
--
-- KEYS (keys.py): writes KEYS[3] running, then the target's index: KEYS[1] available, KEYS[2]
--   scheduled, KEYS[4] succeeded, KEYS[5] dead or KEYS[6] cancelled; and the jobs' hashes
--   T:job:<id>. A member of a workflow that became final runs the fan-in (`fan_in` in
--   _lib.lua): reads and writes T:workflow:<id> and its step's member hashes, and may move held
--   members from KEYS[2] scheduled to KEYS[1] available. Leaves a wake-up token on T:wake when a job is due again, and publishes once on
--   T:finished the ids of the jobs that became final (succeeded, dead or cancelled).
-- ARGV[1] T; ARGV[2] now ('' = server TIME); then 7 per outcome: job id, claim token,
--   kind (complete | retry | dead_letter | cancel | release | snooze), target state (`Ack.target`,
--   decided in Python: succeeded | scheduled | dead | cancelled | available), result JSON
--   ('' = none), error JSON ('' = none; appended for any kind), delay in seconds
--   (`Ack.run_in`, '' = none): a job whose target is scheduled runs again at now + delay.
--   The kind says only what else changes: a release or a snooze gives its attempt back, a
--   snooze counts one more in the hash's `snoozes`, a complete keeps its result.
-- Returns one code per outcome: 1 applied, 0 fenced off (not running that claim),
--   -1 no such job in this queue.
-- validates: now; per outcome the job id and claim token (whole), the kind, its target, the delay.
-- Every argument is checked before the first write (see _lib.lua): a batch with one bad outcome
-- changes nothing.
-- The targets each kind may lead to (`Ack.target`): anything else is refused, so a target that
-- does not fit its kind can never leave a job out of every index.
local TARGETS = {
    complete = { succeeded = true }, retry = { scheduled = true }, dead_letter = { dead = true },
    cancel = { cancelled = true }, release = { available = true, scheduled = true },
    snooze = { scheduled = true },
}
if #ARGV < 2 or (#ARGV - 2) % 7 ~= 0 then
    refuse('argument count', #ARGV)
end
local now = clock(ARGV[2])
local now_s = fmt(now)
for i = 3, #ARGV, 7 do
    integer_arg(ARGV[i], 'job id')
    integer_arg(ARGV[i + 1], 'claim token')
    local targets = TARGETS[ARGV[i + 2]]
    if not targets then
        refuse('outcome kind', ARGV[i + 2])
    end
    if not targets[ARGV[i + 3]] then
        refuse('outcome target for ' .. ARGV[i + 2], ARGV[i + 3])
    end
    local err = ARGV[i + 5]
    if err ~= '' and (string.sub(err, 1, 1) ~= '{' or string.sub(err, -1) ~= '}') then
        refuse('error record (not a JSON object)', err)
    end
    if ARGV[i + 6] ~= '' then
        seconds_arg(ARGV[i + 6], 'delay')
    end
end
local out = {}
local due = false
local done = {}
local finished = { succeeded = {}, dead = {}, cancelled = {} }
local final = {}
local workflows = {}
for i = 3, #ARGV, 7 do
    local id, token, kind, target = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local result, err, delay = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    local k = job_key(id)
    -- Only what this outcome needs is read: each field of a small hash is found by a scan
    -- of the whole hash, and a complete, the common case, needs three (the workflow id for
    -- the fan-in of a member that became final).
    local f = redis.call('HMGET', k, 'state', 'claims', 'workflow_id')
    if not f[1] then
        out[#out + 1] = -1
    elseif f[1] ~= 'running' or f[2] ~= token then
        out[#out + 1] = 0
    else
        if (target == 'scheduled' or target == 'available')
            and redis.call('HGET', k, 'cancel_requested') == '1' then
            target = 'cancelled'
        end
        done[#done + 1] = id
        if kind == 'release' or kind == 'snooze' then
            redis.call('HINCRBY', k, 'attempt', -1)
        end
        if kind == 'snooze' then
            redis.call('HINCRBY', k, 'snoozes', 1)
        end
        if err ~= '' then
            redis.call('HSET', k, 'errors', append_error(redis.call('HGET', k, 'errors'), err))
        end
        if kind == 'complete' then
            redis.call('HSET', k, 'state', target, 'finished_at', now_s, 'result', result,
                'lease_owner', '', 'lease_expires_at', '')
        elseif target == 'scheduled' then
            local run_at = now
            if delay ~= '' then
                run_at = now + tonumber(delay)
            end
            redis.call('HSET', k, 'state', 'scheduled', 'run_at', fmt(run_at),
                'lease_owner', '', 'lease_expires_at', '')
            redis.call('ZADD', SCHEDULED, fmt(run_at), id)
            if run_at <= now then
                due = true
            end
        elseif target == 'available' then
            redis.call('HSET', k, 'state', 'available', 'lease_owner', '', 'lease_expires_at', '')
            local placed = redis.call('HMGET', k, 'priority', 'run_at')
            make_available(id, placed[1], placed[2])
            due = true
        else
            redis.call('HSET', k, 'state', target, 'finished_at', now_s,
                'lease_owner', '', 'lease_expires_at', '')
        end
        if finished[target] then
            local list = finished[target]
            list[#list + 1] = now_s
            list[#list + 1] = id
            final[#final + 1] = id
            if f[3] and f[3] ~= '' then
                workflows[#workflows + 1] = f[3]
            end
        end
        out[#out + 1] = 1
    end
end
if #done > 0 then
    call_many('ZREM', RUNNING, done)
end
for state, list in pairs(finished) do
    if #list > 0 then
        call_many('ZADD', FINISHED[state], list)
    end
end
-- The fan-in of every workflow one of whose members became final here, after the indexes are
-- written (it reads the members' states).
local seen = {}
for _, workflow in ipairs(workflows) do
    if not seen[workflow] then
        seen[workflow] = true
        if fan_in(workflow, now_s) then
            due = true
        end
    end
end
if due then
    wake()
end
announce_finished(final)
return out
