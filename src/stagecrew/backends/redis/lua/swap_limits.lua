#!lua flags=allow-oom
-- swap_limits: the all-or-nothing compare-and-set of limit records (backends/limit_states.py):
-- when the live record of every name is at its expected version (or absent where none is
-- expected), write every record, each expiring at now + its ttl; else write nothing. One
-- script, so two writers that read the same version never both write.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:limits (HASH: name -> limit record) and KEYS[2]
--   {P}:limits:expiry (ZSET: name by expires_at), read, and written when the compare holds.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] n, the number of
--   swaps; then 5 per swap: name, expected version ('' = no live record), new version, ttl
--   (seconds), value (JSON text, checked by the front layer). Versions are compared and stored
--   as text: up to 2**63, beyond a Lua number's exact integers.
-- Returns {1, now, expires_at_1, ..., expires_at_n} when every record was written; else
--   {0, now, then per live record of the names: name, version, expires_at, value}, nothing
--   written.
-- validates: now; n and the argument count; per swap its name (non-empty, not repeated), the
--   versions (digits without a leading zero, the new one not the expected one), the ttl
--   (finite, > 0).
local LIMITS, EXPIRY = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local n = integer_arg(ARGV[3], 'swap count', 0)
local BASE, WIDTH = 3, 5
if #ARGV ~= BASE + n * WIDTH then
    refuse('argument count', #ARGV)
end
local seen = {}
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local name = ARGV[o + 1]
    if name == '' or seen[name] then
        refuse('limit name', name)
    end
    seen[name] = true
    if ARGV[o + 2] ~= '' then
        version_arg(ARGV[o + 2], 'expected version')
    end
    version_arg(ARGV[o + 3], 'new version')
    if ARGV[o + 3] == ARGV[o + 2] then
        refuse('new version', ARGV[o + 3])
    end
    if finite_arg(ARGV[o + 4], 'ttl') <= 0 then
        refuse('ttl', ARGV[o + 4])
    end
end

-- The compare: every live version is the one expected (an expired record counts as none).
local live = {}
local holds = true
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local version, expires_at, value = live_limit(redis.call('HGET', LIMITS, ARGV[o + 1]), now)
    if version then
        live[#live + 1] = { ARGV[o + 1], version, expires_at, value }
    end
    if (version or '') ~= ARGV[o + 2] then
        holds = false
    end
end
if not holds then
    local out = { 0, fmt(now) }
    for _, record in ipairs(live) do
        for _, field in ipairs(record) do
            out[#out + 1] = field
        end
    end
    return out
end

local out = { 1, fmt(now) }
for i = 1, n do
    local o = BASE + (i - 1) * WIDTH
    local expires_at = fmt(now + tonumber(ARGV[o + 4]))
    redis.call('HSET', LIMITS, ARGV[o + 1], limit_record(ARGV[o + 3], expires_at, ARGV[o + 5]))
    redis.call('ZADD', EXPIRY, expires_at, ARGV[o + 1])
    out[#out + 1] = expires_at
end
return out
