#!lua flags=no-writes
-- read_limits: the live limit records of some names, and now (backends/limit_states.py).
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:limits (HASH: name -> limit record), read.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3...] the names.
-- Returns {now, then per live record: name, version, expires_at, value}; a name without a live
--   record (never written, expired, or pruned) is left out.
-- validates: now, the names (non-empty).
local LIMITS = KEYS[1]
local now = clock(ARGV[2])
for i = 3, #ARGV do
    if ARGV[i] == '' then
        refuse('limit name', ARGV[i])
    end
end
local out = { fmt(now) }
for i = 3, #ARGV do
    local version, expires_at, value = live_limit(redis.call('HGET', LIMITS, ARGV[i]), now)
    if version then
        out[#out + 1] = ARGV[i]
        out[#out + 1] = version
        out[#out + 1] = expires_at
        out[#out + 1] = value
    end
end
return out
