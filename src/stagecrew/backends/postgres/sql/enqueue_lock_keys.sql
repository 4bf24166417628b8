-- Lock every idempotency and unique key of a batch (%(keys)s, each "i:" or "u:" and the key) until this transaction ends, in one order store-wide: two batches sharing keys then never wait on each other's rows in opposite orders (a deadlock), the second waits for the first instead.
SELECT count(pg_advisory_xact_lock(lock_id))
FROM (
    SELECT DISTINCT hashtextextended({jobs_table} || ':' || key, 0) AS lock_id
    FROM unnest(%(keys)b::text[]) AS key
    ORDER BY lock_id
) AS locks
