#!lua flags=allow-oom
-- record_worker: store a worker's beat in the registry (backends/worker_registry.py): insert
-- its record, or update it keeping started_at. A stopped record keeps its alive_until and
-- stopped_at: a beat that was on its way when the worker stopped does not revive it.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:workers (HASH: id -> worker record) and KEYS[2]
--   {P}:workers:seen (ZSET: id by seen_at), read and written.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME); ARGV[3] the worker id;
--   ARGV[4] ttl (seconds); ARGV[5] stopped ('1' or '0'); ARGV[6] info (JSON text, checked by
--   the front layer).
-- Returns now.
-- validates: now, the id (non-empty), the ttl (finite, > 0), stopped ('0' or '1').
local WORKERS, SEEN = KEYS[1], KEYS[2]
local now = clock(ARGV[2])
local id, stopped, info = ARGV[3], ARGV[5], ARGV[6]
if id == nil or id == '' then
    refuse('worker id', id)
end
local ttl = finite_arg(ARGV[4], 'ttl')
if ttl <= 0 then
    refuse('ttl', ARGV[4])
end
if stopped ~= '0' and stopped ~= '1' then
    refuse('stopped', stopped)
end
if info == nil then
    refuse('info', info)
end

local now_s = fmt(now)
local started_at, alive_until, stopped_at = now_s, fmt(now + ttl), '-'
if stopped == '1' then
    alive_until, stopped_at = now_s, now_s
end
local previous = redis.call('HGET', WORKERS, id)
if previous then
    local was_started, was_alive, was_stopped = string.match(previous, '^(%S+) %S+ (%S+) (%S+) ')
    if was_started then
        started_at = was_started
        if was_stopped ~= '-' then
            alive_until, stopped_at = was_alive, was_stopped
        end
    end
end
redis.call('HSET', WORKERS, id, started_at .. ' ' .. now_s .. ' ' .. alive_until .. ' ' ..
    stopped_at .. ' ' .. info)
redis.call('ZADD', SEEN, now_s, id)
return now_s
