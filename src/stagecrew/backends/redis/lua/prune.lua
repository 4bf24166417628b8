#!lua flags=allow-oom
-- prune: delete up to `limit` finished jobs of one queue that are older than their state's
-- retention (finished_at < now - horizon); a state without a horizon is kept.
--
-- KEYS (keys.py): reads and writes KEYS[4] succeeded, KEYS[5] dead, KEYS[6] cancelled,
--   KEYS[7] all, KEYS[8] idempotency; deletes the jobs' hashes T:job:<id>.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] limit; ARGV[4] succeeded horizon;
--   ARGV[5] cancelled horizon; ARGV[6] dead horizon (seconds; '' = keep forever).
-- Returns the number of jobs deleted.
-- validates: now, limit (whole, >= 0), each horizon ('' or finite, >= 0).
local now = clock(ARGV[2])
local remaining = integer_arg(ARGV[3], 'limit', 0)
local horizons = { { 'succeeded', ARGV[4] }, { 'cancelled', ARGV[5] }, { 'dead', ARGV[6] } }
for _, pair in ipairs(horizons) do
    if pair[2] ~= '' then
        pair[2] = finite_arg(pair[2], pair[1] .. ' horizon')
        if pair[2] < 0 then
            refuse(pair[1] .. ' horizon', pair[2])
        end
    end
end
local deleted = 0
for _, pair in ipairs(horizons) do
    local state, horizon = pair[1], pair[2]
    if horizon ~= '' and remaining > 0 then
        local cutoff = '(' .. fmt(now - horizon)
        local ids = redis.call('ZRANGEBYSCORE', FINISHED[state], '-inf', cutoff, 'LIMIT', 0,
            remaining)
        for _, id in ipairs(ids) do
            local key = redis.call('HGET', job_key(id), 'idempotency_key')
            delete_job(id, state, key)
        end
        remaining = remaining - #ids
        deleted = deleted + #ids
    end
end
return deleted
