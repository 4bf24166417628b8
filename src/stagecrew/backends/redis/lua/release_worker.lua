#!lua flags=allow-oom
-- release_worker: settle every running job of one queue that a given worker holds, lease expired
-- or not, exactly as rescue.lua settles an expired one: back to available, or dead (attempts
-- exhausted or lost too often), or cancelled (a cancellation was pending); each gets a "worker
-- lost" error. For a worker known to be dead (its supervisor saw the process exit).
--
-- validates: now, the worker id (not empty), max_lost (whole, >= 1), the worker-lost error's
--   fields (text; the message with a %s).
--
-- KEYS (keys.py): reads and writes KEYS[3] running; writes KEYS[1] available, KEYS[5] dead,
--   KEYS[6] cancelled and the jobs' hashes T:job:<id>. Leaves a wake-up token on T:wake when a
--   job is available again, and publishes once on T:finished the ids of the jobs that ended
--   dead or cancelled.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] the worker id; ARGV[4] max_lost;
--   ARGV[5..8] the "worker lost" error's type, message, kind and cancelled kind
--   (records.WORKER_LOST.params()).
-- Returns {requeued, dead, cancelled}, or an error reply (and no write) for a bad argument.
--
-- There is no index of jobs by worker: the whole of T:running is read, in this one call, so an
-- entry that a heartbeat of another worker moves meanwhile cannot be missed. T:running holds only
-- claimed jobs (at most the fleet's capacity for this queue).
local now = clock(ARGV[2])
local worker = ARGV[3]
if worker == nil or worker == '' then
    refuse('worker id', '')
end
local max_lost = integer_arg(ARGV[4], 'max_lost', 1)
local record = lost_record_arg(5)
local now_s = fmt(now)
local settled = new_settled()
for _, id in ipairs(redis.call('ZRANGE', RUNNING, 0, -1)) do
    local k = job_key(id)
    local f = redis.call('HMGET', k, 'state', 'attempt', 'max_attempts', 'lost',
        'cancel_requested', 'lease_owner', 'errors', 'priority', 'run_at', 'workflow_id')
    if f[1] == 'running' and f[6] == worker then
        redis.call('ZREM', RUNNING, id)
        settle_lost(id, f, max_lost, now_s, record, settled)
    end
end
announce_settled(settled, now_s)
return { settled.available, settled.dead, settled.cancelled }
