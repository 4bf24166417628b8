-- Settle running jobs whose worker is lost, as transitions.after_lease_expired decides; count each outcome.
-- {lost} says which running jobs, and {locked} how a row locked right now is treated (the backend
-- splices both in). rescue: up to %(limit)s expired leases, oldest first, read off jobs_lease; a row
-- an ack or a heartbeat holds right now is skipped (its owner is alive) and looked at again by the
-- next rescue, so a rescue never waits on a lock. release_worker: every job %(worker)s holds, lease
-- expired or not (%(limit)s is NULL), for a worker known to be dead (its supervisor saw the process
-- exit); a row locked right now is waited for, not skipped (a transaction the dead worker left open
-- ends when the server sees its connection gone), and the WHERE clause is then re-checked on the
-- newest row version, so a job the worker finished just before it died is left as it is.
-- The locked rows are then updated by id. SET expressions read the row as it was, so "lost + 1" is
-- the loss being recorded now. The "worker lost" error record gets its fixed fields from the
-- backend (records.WORKER_LOST: %(lost_type)s, %(lost_message)s with one %s for the lease owner,
-- %(lost_kind)s, %(lost_cancelled_kind)s); the statement fills in only the owner, the attempt and
-- the store's time. Queues that got a job back are woken once each; jobs that ended dead or
-- cancelled are announced with one notification to %(finished_channel)s, as ack.sql does. The last
-- column lists the workflows of members that ended dead or cancelled (the backend's fan-in).
WITH lost AS (
    SELECT id
    FROM {schema}.jobs
    WHERE {lost}
      AND state = 'running'
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE {locked}
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
        order_at = j.run_at,
        errors = (CASE WHEN j.errors = '[]' THEN '[' ELSE left(j.errors, -1) || ',' END)
                 || json_build_object(
                        'attempt', j.attempt,
                        'at', {schema}.store_now(%(now)s),
                        'kind', CASE WHEN j.cancel_requested THEN %(lost_cancelled_kind)s::text
                                     ELSE %(lost_kind)s::text END,
                        'type', %(lost_type)s::text,
                        'message', format(%(lost_message)s::text, coalesce(j.lease_owner, 'None')),
                        'traceback', ''
                    )::text
                 || ']',
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE j.id = ANY(ARRAY(SELECT id FROM lost))
    RETURNING j.id, j.state, j.queue, j.workflow_id
)
SELECT count(*) FILTER (WHERE state = 'available'),
       count(*) FILTER (WHERE state = 'dead'),
       count(*) FILTER (WHERE state = 'cancelled'),
       (SELECT count(pg_notify(%(channel)s, q.queue))
        FROM (SELECT DISTINCT queue FROM settled WHERE state = 'available') AS q),
       (SELECT count(pg_notify(%(finished_channel)s,
                               CASE WHEN octet_length(f.ids) <= %(finished_payload_bytes)s
                                    THEN f.ids ELSE '' END))
        FROM (SELECT string_agg(id::text, ',') AS ids
              FROM settled WHERE state IN ('dead', 'cancelled')) AS f
        WHERE f.ids IS NOT NULL),
       (SELECT array_agg(DISTINCT workflow_id) FROM settled
        WHERE workflow_id IS NOT NULL AND state IN ('dead', 'cancelled'))
FROM settled
