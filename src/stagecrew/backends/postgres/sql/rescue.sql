-- Settle up to %(limit)s running jobs whose lease expired, as transitions.after_lease_expired decides; count each outcome.
-- SET expressions read the row as it was, so "lost + 1" is the loss being recorded now. Queues that
-- got a job back are woken once each. Expired leases are read off jobs_lease, oldest first; a row
-- an ack or a heartbeat holds right now is skipped (its owner is alive) and looked at again by
-- the next rescue, so a rescue never waits on a lock. The rows are then updated by id.
WITH expired AS (
    SELECT id
    FROM {schema}.jobs
    WHERE lease_expires_at < {schema}.store_now(%(now)s)
      AND state = 'running'
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
settled AS (
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
    WHERE j.id = ANY(ARRAY(SELECT id FROM expired))
    RETURNING j.state, j.queue
)
SELECT count(*) FILTER (WHERE state = 'available'),
       count(*) FILTER (WHERE state = 'dead'),
       count(*) FILTER (WHERE state = 'cancelled'),
       (SELECT count(pg_notify(%(channel)s, q.queue))
        FROM (SELECT DISTINCT queue FROM settled WHERE state = 'available') AS q)
FROM settled
