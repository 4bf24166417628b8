-- Finished jobs whose idempotency window (per key, in %(windows)s; NULL: none) has passed give their key up, so that a new job can take it.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
)
UPDATE {schema}.jobs AS j
SET idempotency_key = NULL
FROM clock, unnest(%(keys)s::text[], %(windows)s::double precision[]) AS k (key, window_seconds)
WHERE j.idempotency_key = k.key
  AND j.state IN ('succeeded', 'dead', 'cancelled')
  AND j.finished_at + k.window_seconds <= clock.now
