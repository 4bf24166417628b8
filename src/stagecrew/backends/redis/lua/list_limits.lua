#!lua flags=no-writes
-- list_limits: one HSCAN page of the limit records, those live at now whose name starts with
-- a prefix (compared as bytes: a prefix of UTF-8 text is a prefix of its bytes). The caller
-- passes the first page's now to the next pages, so that one listing has one now; HSCAN may
-- return a record on two pages, which the caller keeps once.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:limits (HASH: name -> limit record), read.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] the HSCAN cursor
--   ('0' to start); ARGV[4] its COUNT hint; ARGV[5] the prefix ('' = every name).
-- Returns {next cursor ('0' = done), now, then per live record of the page: name, version,
--   expires_at, value}.
-- validates: now, the cursor (digits), the count (whole, >= 1), the argument count.
local LIMITS = KEYS[1]
if #ARGV ~= 5 then
    refuse('argument count', #ARGV)
end
local now = clock(ARGV[2])
local cursor = ARGV[3]
if not string.match(cursor, '^[0-9]+$') or #cursor > 20 then
    refuse('cursor', cursor)
end
local count = integer_arg(ARGV[4], 'count', 1)
local prefix = ARGV[5]
local page = redis.call('HSCAN', LIMITS, cursor, 'COUNT', count)
local out = { page[1], fmt(now) }
local fields = page[2]
for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, #prefix) == prefix then
        local version, expires_at, value = live_limit(fields[i + 1], now)
        if version then
            out[#out + 1] = name
            out[#out + 1] = version
            out[#out + 1] = expires_at
            out[#out + 1] = value
        end
    end
end
return out
