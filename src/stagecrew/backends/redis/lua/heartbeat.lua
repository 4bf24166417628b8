#!lua flags=allow-oom
-- heartbeat: extend the leases a worker still holds on jobs of one queue. A lease is held when
-- the job is running the given claim for this worker (fencing by job id and claim token: the
-- job's `claims` count).
--
-- KEYS (keys.py): writes KEYS[3] running and lease_expires_at of the held jobs' hashes
--   T:job:<id>.
-- ARGV[1] T; ARGV[2] now ('' = server TIME); ARGV[3] worker id; ARGV[4] lease seconds;
--   then pairs: job id, claim token.
-- Returns one code per pair: 0 held and extended, 1 held and extended but its cancellation was
--   requested, 2 not held (lost), 3 no such job in this queue.
-- validates: now, lease seconds (finite, >= 0), each job id and claim token (whole).
-- Every argument is checked before the first write (see _lib.lua).
if #ARGV < 4 or (#ARGV - 4) % 2 ~= 0 then
    refuse('argument count', #ARGV)
end
local now = clock(ARGV[2])
local worker = ARGV[3]
if worker == '' then
    refuse('worker id', "''")
end
local lease_s = fmt(now + seconds_arg(ARGV[4], 'lease seconds'))
for i = 5, #ARGV, 2 do
    integer_arg(ARGV[i], 'job id')
    integer_arg(ARGV[i + 1], 'claim token')
end
local out = {}
for i = 5, #ARGV, 2 do
    local id, token = ARGV[i], ARGV[i + 1]
    local k = job_key(id)
    local f = redis.call('HMGET', k, 'state', 'claims', 'lease_owner', 'cancel_requested')
    if not f[1] then
        out[#out + 1] = 3
    elseif f[1] ~= 'running' or f[2] ~= token or f[3] ~= worker then
        out[#out + 1] = 2
    else
        redis.call('HSET', k, 'lease_expires_at', lease_s)
        redis.call('ZADD', RUNNING, lease_s, id)
        if f[4] == '1' then
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
end
return out
