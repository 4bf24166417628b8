#!lua flags=allow-oom
-- rescue: settle running jobs of one queue whose lease expired before now, as
-- transitions.after_lease_expired decides: back to available, or dead (attempts exhausted or
-- lost too often), or cancelled (a cancellation was pending). Each gets a "worker lost" error.
--
-- KEYS: the queue's keys (see _lib.lua). Reads and writes KEYS[3] running; writes KEYS[1]
--   available, KEYS[5] dead, KEYS[6] cancelled and the jobs' hashes T:job:<id>.
--   Publishes on T:wake when a job is available again.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] max_lost; ARGV[4] the most jobs to settle.
-- Returns {requeued, dead, cancelled, expired jobs looked at}; the caller calls again while the
--   last number equals ARGV[4].
-- validates: now, max_lost (whole, >= 1), the batch size (whole, >= 1).
local now = clock(ARGV[2])
local now_s = fmt(now)
local max_lost = integer_arg(ARGV[3], 'max_lost', 1)
local batch = integer_arg(ARGV[4], 'batch size', 1)
local expired = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', '(' .. now_s, 'LIMIT', 0, batch)
local requeued, dead, cancelled = 0, 0, 0
for _, id in ipairs(expired) do
    redis.call('ZREM', RUNNING, id)
    local k = job_key(id)
    local f = redis.call('HMGET', k, 'state', 'attempt', 'max_attempts', 'lost',
        'cancel_requested', 'lease_owner', 'errors', 'priority', 'run_at')
    if f[1] == 'running' then
        local attempt = tonumber(f[2]) or 0
        local lost = (tonumber(f[4]) or 0) + 1
        local target, kind
        if f[5] == '1' then
            target, kind = 'cancelled', 'cancelled'
        elseif attempt >= (tonumber(f[3]) or 0) or lost >= max_lost then
            target, kind = 'dead', 'lost'
        else
            target, kind = 'available', 'lost'
        end
        local message = 'worker ' .. (f[6] or 'None') .. ' lost its lease (worker lost)'
        local entry = '{"attempt":' .. int(attempt) .. ',"at":' .. now_s .. ',"kind":"' .. kind
            .. '","type":"WorkerLost","message":' .. cjson.encode(message) .. ',"traceback":""}'
        redis.call('HSET', k, 'state', target, 'lost', lost, 'errors', append_error(f[7], entry))
        redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
        if target == 'available' then
            make_available(id, f[8], f[9])
            requeued = requeued + 1
        else
            redis.call('HSET', k, 'finished_at', now_s)
            redis.call('ZADD', FINISHED[target], now_s, id)
            if target == 'dead' then
                dead = dead + 1
            else
                cancelled = cancelled + 1
            end
        end
    end
end
if requeued > 0 then
    wake()
end
return { requeued, dead, cancelled, #expired }
