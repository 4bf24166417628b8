#!lua flags=allow-oom
-- prune_limits: delete up to `limit` limit records expired at now (expires_at <= now), the
-- earliest expired first.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:limits (HASH: name -> limit record) and KEYS[2]
--   {P}:limits:expiry (ZSET: name by expires_at), read and written.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] limit.
-- Returns the number of records deleted.
-- validates: now, the limit (whole, >= 1).
local LIMITS, EXPIRY = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local limit = integer_arg(ARGV[3], 'limit', 1)
local names = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', fmt(now), 'LIMIT', 0, limit)
if #names > 0 then
    call_many('HDEL', LIMITS, names)
    call_many('ZREM', EXPIRY, names)
end
return #names
