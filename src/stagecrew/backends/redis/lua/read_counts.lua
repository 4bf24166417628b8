#!lua flags=no-writes
-- read_counts: the buckets of the minutes that began at or after now - since
-- (backends/job_counts.py), and now.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:counts (HASH: "<bucket> <key>" -> count) and
--   KEYS[2] {P}:counts:buckets (ZSET: those fields by bucket), read.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] since (seconds).
-- Returns {now, then per field: the field, its count}, oldest bucket first.
-- validates: now, since (finite, >= 0).
local COUNTS, BUCKETS = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local since = seconds_arg(ARGV[3], 'since')
local fields = redis.call('ZRANGEBYSCORE', BUCKETS, fmt(now - since), '+inf')
local out = { fmt(now) }
for first = 1, #fields, 4000 do
    local last = math.min(first + 3999, #fields)
    local counts = redis.call('HMGET', COUNTS, unpack(fields, first, last))
    for i = first, last do
        local count = counts[i - first + 1]
        if count then
            out[#out + 1] = fields[i]
            out[#out + 1] = count
        end
    end
end
return out
