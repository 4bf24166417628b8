-- Claim up to %(limit)s due jobs of %(queues)s in (priority, order_at, id) order, skipping rows other claimers hold and paused queues.
-- Each queue's head is read in order off jobs_claim and locked as it is read; the merged heads are
-- cut to %(limit)s. A due scheduled job is claimed directly: no separate promotion step. The
-- claimed rows are then updated by primary key ("id = ANY"), never through a join whose plan a
-- stale statistic could turn into a scan. Each claim counts one more in claims: the value returned
-- is the claim's fencing token.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
due AS (
    SELECT head.id
    FROM (
        SELECT w.queue
        FROM unnest(%(queues)b::text[]) AS w (queue)
        WHERE NOT EXISTS (SELECT FROM {schema}.paused_queues AS p WHERE p.queue = w.queue)
    ) AS wanted
    CROSS JOIN clock
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.order_at
        FROM {schema}.jobs AS j
        WHERE j.state IN ('available', 'scheduled')
          AND j.queue = wanted.queue
          AND j.run_at <= clock.now
        ORDER BY j.priority, j.order_at, j.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS head
    ORDER BY head.priority, head.order_at, head.id
    LIMIT %(limit)s
)
UPDATE {schema}.jobs AS j
SET state = 'running',
    attempt = j.attempt + 1,
    claims = j.claims + 1,
    lease_owner = %(worker)s,
    lease_expires_at = clock.now + %(lease_seconds)s,
    started_at = clock.now
FROM clock
WHERE j.id = ANY(ARRAY(SELECT id FROM due))
RETURNING j.id, j.task, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.enqueued_at,
          j.run_at, j.started_at, j.lease_expires_at, j.lost, j.claims, j.snoozes, j.order_at,
          j.workflow_id, j.workflow_input
