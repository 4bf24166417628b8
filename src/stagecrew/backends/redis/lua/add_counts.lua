#!lua flags=allow-oom
-- add_counts: add counts of finished attempts to the bucket of the minute now is in
-- (backends/job_counts.py), creating the fields that do not exist.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:counts (HASH: "<bucket> <key>" -> count) and
--   KEYS[2] {P}:counts:buckets (ZSET: those fields by bucket), read and written.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] n, the number of
--   keys; then 2 per key: the key (JSON text [queue, task, outcome], written by the engine)
--   and its count.
-- Returns the bucket.
-- validates: now; n and the argument count; per key the key (non-empty) and the count
--   (whole, >= 1).
local COUNTS, BUCKETS = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local n = integer_arg(ARGV[3], 'key count', 0)
local BASE, WIDTH = 3, 2
if #ARGV ~= BASE + n * WIDTH then
    refuse('argument count', #ARGV)
end
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    if ARGV[o + 1] == '' then
        refuse('count key', ARGV[o + 1])
    end
    integer_arg(ARGV[o + 2], 'count', 1)
end
local bucket = fmt(math.floor(now / 60) * 60)
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local field = bucket .. ' ' .. ARGV[o + 1]
    redis.call('HINCRBY', COUNTS, field, ARGV[o + 2])
    redis.call('ZADD', BUCKETS, bucket, field)
end
return bucket
