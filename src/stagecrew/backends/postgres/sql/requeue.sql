-- Make dead and cancelled jobs matching a JobFilter available again from attempt 0 and no snooze (errors kept), but those whose unique key another job holds; wake their queues.
-- Of several matches sharing a unique key that none of them holds, the lowest id is re-run and
-- the others stay (uniqueness.md). The UPDATE checks the state again: a job a concurrent
-- transaction changed meanwhile is left as that transaction made it.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
candidates AS (
    SELECT id, unique_key, unique_key IS NULL OR strpos(unique_states, state) > 0 AS holds
    FROM {schema}.jobs
    WHERE state IN ('dead', 'cancelled') {filter}
),
chosen AS (
    SELECT id FROM candidates WHERE holds
    UNION ALL
    SELECT id FROM (
        SELECT DISTINCT ON (c.unique_key) c.id
        FROM candidates AS c
        WHERE NOT c.holds
          AND NOT EXISTS (
              SELECT FROM {schema}.jobs AS h
              WHERE h.unique_key = c.unique_key
                AND h.unique_key IS NOT NULL AND strpos(h.unique_states, h.state) > 0)
        ORDER BY c.unique_key, c.id
    ) AS first_of_each_key
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
    WHERE j.id IN (SELECT id FROM chosen) AND j.state IN ('dead', 'cancelled')
    RETURNING j.queue
)
SELECT count(*),
       (SELECT count(pg_notify(%(channel)s, q.queue)) FROM (SELECT DISTINCT queue FROM requeued) AS q)
FROM requeued
