#!lua flags=allow-oom
-- prune_workers: delete up to `limit` worker records last seen `keep` or more seconds before
-- now, the longest silent first.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:workers (HASH: id -> worker record) and KEYS[2]
--   {P}:workers:seen (ZSET: id by seen_at), read and written.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] keep (seconds);
--   ARGV[4] limit.
-- Returns the number of records deleted.
-- validates: now, keep (finite, >= 0), the limit (whole, >= 1).
local WORKERS, SEEN = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local keep = seconds_arg(ARGV[3], 'keep')
local limit = integer_arg(ARGV[4], 'limit', 1)
local ids = redis.call('ZRANGEBYSCORE', SEEN, '-inf', fmt(now - keep), 'LIMIT', 0, limit)
if #ids > 0 then
    call_many('HDEL', WORKERS, ids)
    call_many('ZREM', SEEN, ids)
end
return #ids
