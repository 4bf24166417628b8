-- Make dead and cancelled jobs matching a JobFilter available again from attempt 0 and no snooze (errors kept), but those whose unique key another job holds; wake their queues.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
requeued AS (
    UPDATE {schema}.jobs AS j
    SET state = 'available',
        attempt = 0,
        lost = 0,
        snoozes = 0,
        run_at = clock.now,
        order_at = clock.now,
        finished_at = NULL,
        cancel_requested = false
    FROM clock
    WHERE j.state IN ('dead', 'cancelled') {filter}
      AND (j.unique_key IS NULL
           OR strpos(j.unique_states, j.state) > 0
           OR NOT EXISTS (
               SELECT FROM {schema}.jobs AS h
               WHERE h.unique_key = j.unique_key
                 AND h.unique_key IS NOT NULL AND strpos(h.unique_states, h.state) > 0))
    RETURNING j.queue
)
SELECT count(*),
       (SELECT count(pg_notify(%(channel)s, q.queue)) FROM (SELECT DISTINCT queue FROM requeued) AS q)
FROM requeued
