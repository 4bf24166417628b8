-- Record attempt outcomes, each fenced: a job changes only while it still runs that claim (claims = token); returns the positions applied.
-- Acks arrive as parallel arrays sorted by id, each id at most once per statement (the backend
-- sends a later ack of the same job in a statement of its own). Rows are found by index with
-- "id = ANY(...)", and each row finds its own ack by binary search (width_bucket over the sorted
-- ids): no join, so a stale statistic (a queue table's always are) cannot turn this into a scan
-- of the jobs per ack, and a batch of any size costs n log n.
-- %(states)s holds each outcome's target (ACK_TARGET); a retry or hand-back of a job whose cancel
-- is pending ends it cancelled instead (transitions.after_ack). A hand-back or a snooze gives its
-- attempt back; a snooze counts one more in snoozes. %(errors)s holds AttemptError
-- JSON, or NULL to leave the errors alone; it is appended to the stored JSON array as text, so no
-- stored value is ever re-parsed. %(delays)s holds, for an outcome that schedules the job (a retry,
-- a delayed hand-back), the seconds to add to the store's clock, else NULL. A job that waits again
-- is ordered by its run_at (order_at = run_at), keyed or not. Queues that got work
-- back (retry, hand-back) are woken once each. If any applied row became final (succeeded, dead,
-- cancelled), one notification goes to %(finished_channel)s for the whole statement, never one per
-- job (NOTIFY takes a cluster-wide lock at commit): its payload is the finished ids, comma-joined,
-- or '' ("any job") when they would take more than %(finished_payload_bytes)s bytes. The last
-- column is the job's workflow_id where it became final (else NULL, and for a job that is no
-- workflow member): the fan-in's input.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
batch AS (
    SELECT %(ids)b::bigint[] AS ids,
           %(tokens)b::integer[] AS tokens,
           %(kinds)b::text[] AS kinds,
           %(states)b::text[] AS states,
           %(results)b::text[] AS results,
           %(errors)b::text[] AS errors,
           %(delays)b::double precision[] AS delays
),
applied AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN j.cancel_requested
                          AND b.kinds[width_bucket(j.id, b.ids)] IN ('retry', 'release', 'snooze')
                     THEN 'cancelled'
                     ELSE b.states[width_bucket(j.id, b.ids)] END,
        attempt = CASE WHEN b.kinds[width_bucket(j.id, b.ids)] IN ('release', 'snooze')
                       THEN j.attempt - 1 ELSE j.attempt END,
        snoozes = CASE WHEN b.kinds[width_bucket(j.id, b.ids)] = 'snooze'
                       THEN j.snoozes + 1 ELSE j.snoozes END,
        run_at = CASE WHEN b.delays[width_bucket(j.id, b.ids)] IS NOT NULL
                           AND NOT j.cancel_requested
                      THEN clock.now + b.delays[width_bucket(j.id, b.ids)]
                      ELSE j.run_at END,
        order_at = CASE WHEN b.delays[width_bucket(j.id, b.ids)] IS NOT NULL
                             AND NOT j.cancel_requested
                        THEN clock.now + b.delays[width_bucket(j.id, b.ids)]
                        ELSE j.run_at END,
        finished_at = CASE WHEN b.states[width_bucket(j.id, b.ids)]
                                    IN ('succeeded', 'dead', 'cancelled')
                                OR (j.cancel_requested
                                    AND b.kinds[width_bucket(j.id, b.ids)]
                                        IN ('retry', 'release', 'snooze'))
                           THEN clock.now ELSE j.finished_at END,
        result = CASE WHEN b.kinds[width_bucket(j.id, b.ids)] = 'complete'
                      THEN b.results[width_bucket(j.id, b.ids)] ELSE j.result END,
        errors = CASE WHEN b.errors[width_bucket(j.id, b.ids)] IS NULL THEN j.errors
                      WHEN j.errors = '[]' THEN '[' || b.errors[width_bucket(j.id, b.ids)] || ']'
                      ELSE left(j.errors, -1) || ',' || b.errors[width_bucket(j.id, b.ids)] || ']'
                 END,
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM batch AS b CROSS JOIN clock
    WHERE j.id = ANY(%(ids)b::bigint[])
      AND j.state = 'running'
      AND j.claims = b.tokens[width_bucket(j.id, b.ids)]
    RETURNING width_bucket(j.id, b.ids), j.id, j.queue, j.state, j.workflow_id
)
SELECT width_bucket,
       (SELECT count(pg_notify(%(channel)s, q.queue))
        FROM (SELECT DISTINCT queue FROM applied WHERE state IN ('available', 'scheduled')) AS q),
       (SELECT count(pg_notify(%(finished_channel)s,
                               CASE WHEN octet_length(f.ids) <= %(finished_payload_bytes)s
                                    THEN f.ids ELSE '' END))
        FROM (SELECT string_agg(id::text, ',') AS ids
              FROM applied WHERE state IN ('succeeded', 'dead', 'cancelled')) AS f
        WHERE f.ids IS NOT NULL),
       CASE WHEN state IN ('succeeded', 'dead', 'cancelled') THEN workflow_id END
FROM applied
