#!lua flags=allow-oom
-- rescue: settle running jobs of one queue whose lease expired before now, as
-- transitions.after_lease_expired decides: back to available, or dead (attempts exhausted or
-- lost too often), or cancelled (a cancellation was pending). Each gets a "worker lost" error.
--
-- KEYS (keys.py): reads and writes KEYS[3] running; writes KEYS[1] available, KEYS[5] dead,
--   KEYS[6] cancelled and the jobs' hashes T:job:<id>. Leaves a wake-up token on T:wake when a
--   job is available again, and publishes once on T:finished the ids of the jobs that ended
--   dead or cancelled.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] max_lost; ARGV[4] the most jobs to settle;
--   ARGV[5..8] the "worker lost" error's type, message, kind and cancelled kind
--   (records.WORKER_LOST.params()).
-- Returns {requeued, dead, cancelled, expired jobs looked at}; the caller calls again while the
--   last number equals ARGV[4].
-- validates: now, max_lost (whole, >= 1), the batch size (whole, >= 1), the worker-lost error's
--   fields (text; the message with a %s).
local now = clock(ARGV[2])
local now_s = fmt(now)
local max_lost = integer_arg(ARGV[3], 'max_lost', 1)
local batch = integer_arg(ARGV[4], 'batch size', 1)
local record = lost_record_arg(5)
local expired = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', '(' .. now_s, 'LIMIT', 0, batch)
local settled = new_settled()
for _, id in ipairs(expired) do
    redis.call('ZREM', RUNNING, id)
    local k = job_key(id)
    local f = redis.call('HMGET', k, 'state', 'attempt', 'max_attempts', 'lost',
        'cancel_requested', 'lease_owner', 'errors', 'priority', 'run_at', 'workflow_id')
    if f[1] == 'running' then
        settle_lost(id, f, max_lost, now_s, record, settled)
    end
end
announce_settled(settled, now_s)
return { settled.available, settled.dead, settled.cancelled, #expired }
