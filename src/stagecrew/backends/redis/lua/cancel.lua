#!lua flags=allow-oom
-- cancel: cancel one waiting job now, or flag a running one (its worker stops it at a
-- checkpoint, seeing the flag in its heartbeat reply). Finished jobs are left as they are.
--
-- KEYS (keys.py): writes KEYS[1] available (its member from the hash's order_at or run_at),
--   KEYS[2] scheduled or KEYS[10] due, KEYS[6] cancelled and the job's hash T:job:<id>. Publishes the job's id on T:finished when it is
--   cancelled now. A workflow member cancelled now runs the fan-in (`fan_in` in _lib.lua: reads
--   and writes T:workflow:<id>, its step's member hashes, may release held members into KEYS[1]
--   and leave a token on T:wake).
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] job id.
-- Returns the job's hash after the change (HGETALL), or false when there is no such job.
-- validates: now, the job id.
local now_s = fmt(clock(ARGV[2]))
local id = id_arg(ARGV[3], 'job id')
local k = job_key(id)
local f = redis.call('HMGET', k, 'state', 'run_at', 'order_at', 'workflow_id')
if not f[1] then
    return false
end
if f[1] == 'available' or f[1] == 'scheduled' then
    unindex(id, f[1], f[2], f[3])
    redis.call('HSET', k, 'state', 'cancelled', 'finished_at', now_s)
    redis.call('ZADD', FINISHED.cancelled, now_s, id)
    if f[4] and f[4] ~= '' and fan_in(f[4], now_s) then
        wake()
    end
    announce_finished({ id })
elseif f[1] == 'running' then
    redis.call('HSET', k, 'cancel_requested', '1')
end
return redis.call('HGETALL', k)
