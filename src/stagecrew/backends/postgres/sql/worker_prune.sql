-- Delete up to %(limit)s worker records last seen %(keep)s or more seconds before the store's now, longest silent first; rows a beat is writing are skipped.
-- The DELETE repeats the test, as prune.sql does: a row the snapshot saw silent may have been
-- written again since, and a row lock re-checks only the DELETE's own conditions.
WITH doomed AS (
    SELECT id
    FROM {schema}.workers
    WHERE seen_at <= {schema}.store_now(%(now)s) - %(keep)s
    ORDER BY seen_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.workers AS w
WHERE w.id = ANY(ARRAY(SELECT id FROM doomed))
  AND w.seen_at <= {schema}.store_now(%(now)s) - %(keep)s
