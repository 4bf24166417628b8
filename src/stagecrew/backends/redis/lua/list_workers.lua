#!lua flags=no-writes
-- list_workers: every worker record of the registry (backends/worker_registry.py), and now.
--
-- KEYS (keys.py): not a queue's; KEYS[1] {P}:workers (HASH: id -> worker record), read.
-- ARGV[1] {P} (the store's tag); ARGV[2] now ('' = server TIME).
-- Returns {now, then per record: id, record}. The registry holds a record per worker process
--   seen within the pruner's horizon (a day): a few thousand fields at the most.
-- validates: now.
local WORKERS = KEYS[1]
local now = clock(ARGV[2])
local out = { fmt(now) }
local fields = redis.call('HGETALL', WORKERS)
for i = 1, #fields do
    out[#out + 1] = fields[i]
end
return out
