-- Delete up to %(limit)s finished jobs older than their state's retention (a NULL horizon keeps them).
-- Each state is read oldest first off jobs_finished; rows another pruner is deleting are skipped.
-- The doomed ids come from the statement's snapshot, and a row lock re-checks only the DELETE's own
-- conditions on the row as it is now: so the DELETE repeats the state and age test, and a job
-- requeued (or otherwise changed) after the snapshot was taken is left alone.
WITH doomed AS (
    SELECT j.id
    FROM {schema}.jobs AS j
    WHERE j.id IN (
        (SELECT id FROM {schema}.jobs
         WHERE state = 'succeeded'
           AND finished_at < {schema}.store_now(%(now)s) - %(succeeded)s::double precision
         ORDER BY finished_at LIMIT %(limit)s)
        UNION ALL
        (SELECT id FROM {schema}.jobs
         WHERE state = 'cancelled'
           AND finished_at < {schema}.store_now(%(now)s) - %(cancelled)s::double precision
         ORDER BY finished_at LIMIT %(limit)s)
        UNION ALL
        (SELECT id FROM {schema}.jobs
         WHERE state = 'dead'
           AND finished_at < {schema}.store_now(%(now)s) - %(dead)s::double precision
         ORDER BY finished_at LIMIT %(limit)s)
    )
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j
WHERE j.id = ANY(ARRAY(SELECT id FROM doomed))
  AND j.finished_at < {schema}.store_now(%(now)s) - CASE j.state
          WHEN 'succeeded' THEN %(succeeded)s::double precision
          WHEN 'cancelled' THEN %(cancelled)s::double precision
          WHEN 'dead' THEN %(dead)s::double precision
      END
