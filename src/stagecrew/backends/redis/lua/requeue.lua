#!lua flags=allow-oom
-- requeue: make dead or cancelled jobs of one queue available again, with attempt 0, a fresh
-- lost budget, no snooze counted, run_at = now and no pending cancellation; their errors are kept, and so is their
-- claims count (the fencing token never goes back).
--
-- KEYS (keys.py): reads and writes KEYS[5] dead or KEYS[6] cancelled; writes KEYS[1]
--   available and the jobs' hashes T:job:<id>. Leaves a wake-up token on T:wake. A job with a
--   unique key: reads KEYS[13] unique and its holder's hash; a job whose key another job holds
--   is left as it is (skipped), else KEYS[13] names it.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] a JobFilter as JSON (see _lib.lua);
--   ARGV[4] the state whose index to scan (dead | cancelled); ARGV[5] how many non-matching
--   entries at the head of that index to skip; ARGV[6] the most entries to look at;
--   ARGV[7...] job ids: when given, only these jobs are looked at and ARGV[4..6] are ignored.
-- Returns {requeued, looked at, skip for the next call}; a scan is complete once "looked at"
--   is below ARGV[6].
-- validates: now, the filter, the job ids, or else the state (dead | cancelled), skip and count.
local now_s = fmt(clock(ARGV[2]))
local matches, f = job_filter(ARGV[3])
local candidates, skip = scan_candidates(f, 4, { dead = true, cancelled = true })
local requeued = 0
for _, id in ipairs(candidates) do
    local k = job_key(id)
    local f = redis.call('HMGET', k, 'state', 'task', 'finished_at', 'priority', 'unique_key')
    local free = true
    if f[5] and (f[1] == 'dead' or f[1] == 'cancelled') then
        local holder = unique_holder(f[5])
        free = holder == nil or holder == id
    end
    if free and (f[1] == 'dead' or f[1] == 'cancelled') and matches(id, f[1], f[2], f[3]) then
        if f[5] then
            redis.call('HSET', UNIQUE, f[5], index_entry(id))
        end
        unindex(id, f[1], nil)
        redis.call('HSET', k, 'state', 'available', 'run_at', now_s)
        redis.call('HDEL', k, 'attempt', 'lost', 'snoozes', 'finished_at', 'cancel_requested')
        make_available(id, f[4], now_s)
        requeued = requeued + 1
    else
        skip = skip + 1
    end
end
if requeued > 0 then
    wake()
end
return { requeued, #candidates, skip }
