-- Resume queue %(queue)s and wake its listeners (at commit); returns a row only if it was paused.
WITH resumed AS (
    DELETE FROM {schema}.paused_queues WHERE queue = %(queue)s RETURNING queue
)
SELECT pg_notify(%(channel)s, resumed.queue) FROM resumed
