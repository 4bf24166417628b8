-- Delete up to %(limit)s buckets whose minute began before now - %(keep)s, oldest first; rows an add is writing are skipped.
WITH doomed AS (
    SELECT ctid
    FROM {schema}.job_counts
    WHERE bucket < {schema}.store_now(%(now)s) - %(keep)s
    ORDER BY bucket
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.job_counts AS c
USING doomed
WHERE c.ctid = doomed.ctid
