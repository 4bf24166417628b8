#!lua flags=allow-oom
-- prune_counts: delete up to `limit` bucket fields whose minute began before now - keep, the
-- oldest first.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:counts (HASH: "<bucket> <key>" -> count) and
--   KEYS[2] {P}:counts:buckets (ZSET: those fields by bucket), read and written.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] keep (seconds);
--   ARGV[4] limit.
-- Returns the number of fields deleted.
-- validates: now, keep (finite, >= 0), the limit (whole, >= 1).
local COUNTS, BUCKETS = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local keep = seconds_arg(ARGV[3], 'keep')
local limit = integer_arg(ARGV[4], 'limit', 1)
local fields = redis.call('ZRANGEBYSCORE', BUCKETS, '-inf', '(' .. fmt(now - keep), 'LIMIT', 0,
    limit)
if #fields > 0 then
    call_many('HDEL', COUNTS, fields)
    call_many('ZREM', BUCKETS, fields)
end
return #fields
