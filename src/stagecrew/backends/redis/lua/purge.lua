#!lua flags=allow-oom
-- purge: delete finished (succeeded, dead, cancelled) jobs of one queue that match a filter;
-- waiting and running jobs are never deleted. A deleted job's idempotency key is free again.
--
-- KEYS (keys.py): reads and writes KEYS[4] succeeded, KEYS[5] dead or KEYS[6] cancelled,
--   KEYS[7] all, KEYS[8] idempotency; deletes the jobs' hashes T:job:<id>.
-- ARGV[1] T; ARGV[2] a JobFilter as JSON (see _lib.lua); ARGV[3] the state whose index to scan
--   (succeeded | dead | cancelled); ARGV[4] how many non-matching entries at the head of that
--   index to skip; ARGV[5] the most entries to look at; ARGV[6...] job ids: when given, only
--   these jobs are looked at and ARGV[3..5] are ignored.
-- Returns {deleted, looked at, skip for the next call}; a scan is complete once "looked at" is
--   below ARGV[5].
-- validates: the filter, the job ids, or else the state (succeeded | dead | cancelled), skip
--   and count.
local matches, f = job_filter(ARGV[2])
local candidates, skip = scan_candidates(f, 3, FINISHED)
local deleted = 0
for _, id in ipairs(candidates) do
    local f = redis.call('HMGET', job_key(id), 'state', 'task', 'finished_at', 'idempotency_key')
    if FINISHED[f[1]] and matches(id, f[1], f[2], f[3]) then
        delete_job(id, f[1], f[4])
        deleted = deleted + 1
    else
        skip = skip + 1
    end
end
return { deleted, #candidates, skip }
