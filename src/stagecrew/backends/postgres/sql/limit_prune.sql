-- Delete up to %(limit)s expired limit records, longest expired first; rows a swap is writing are skipped.
-- The DELETE repeats the expiry test, as prune.sql does: a row the snapshot saw expired may have
-- been written again since, and a row lock re-checks only the DELETE's own conditions.
WITH doomed AS (
    SELECT name
    FROM {schema}.limit_states
    WHERE expires_at <= {schema}.store_now(%(now)s)
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.limit_states AS l
WHERE l.name = ANY(ARRAY(SELECT name FROM doomed))
  AND l.expires_at <= {schema}.store_now(%(now)s)
