-- Settle every running job %(worker)s holds, lease expired or not, exactly as rescue.sql settles an expired one; count each outcome.
-- For a worker known to be dead: its supervisor saw the process exit, so nothing can renew these
-- leases or write their outcomes. SET expressions read the row as it was, so "lost + 1" is the
-- loss being recorded now. Queues that got a job back are woken once each. Unlike rescue, a row
-- locked right now is waited for, not skipped (a transaction the dead worker left open ends when
-- the server sees its connection gone), and the WHERE clause is then re-checked on the newest
-- row version, so a job the worker finished just before it died is left as it is.
WITH settled AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN j.cancel_requested THEN 'cancelled'
                     WHEN j.attempt >= j.max_attempts OR j.lost + 1 >= %(max_lost)s THEN 'dead'
                     ELSE 'available' END,
        finished_at = CASE WHEN j.cancel_requested
                                OR j.attempt >= j.max_attempts
                                OR j.lost + 1 >= %(max_lost)s
                           THEN {schema}.store_now(%(now)s) END,
        lost = j.lost + 1,
        errors = (CASE WHEN j.errors = '[]' THEN '[' ELSE left(j.errors, -1) || ',' END)
                 || json_build_object(
                        'attempt', j.attempt,
                        'at', {schema}.store_now(%(now)s),
                        'kind', CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'lost' END,
                        'type', 'WorkerLost',
                        'message', 'worker ' || coalesce(j.lease_owner, 'None')
                                   || ' lost its lease (worker lost)',
                        'traceback', ''
                    )::text
                 || ']',
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE j.state = 'running' AND j.lease_owner = %(worker)s
    RETURNING j.state, j.queue
)
SELECT count(*) FILTER (WHERE state = 'available'),
       count(*) FILTER (WHERE state = 'dead'),
       count(*) FILTER (WHERE state = 'cancelled'),
       (SELECT count(pg_notify(%(channel)s, q.queue))
        FROM (SELECT DISTINCT queue FROM settled WHERE state = 'available') AS q)
FROM settled
