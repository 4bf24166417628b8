-- Claim up to %(limit)s due jobs of %(queues)s within concurrency caps, in one statement: claim_within_caps (migration 14) does the whole capped claim.
-- Run on its own (autocommit): the function's lock of capped claims is held until this
-- statement commits. The caps come per kind as a JSON object of names to caps (task and queue
-- caps with an array of their names too; a key cap is named by its task); the columns
-- are claim.sql's RETURNING columns, in its order, so the backend reads both alike.
SELECT j.id, j.task, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.enqueued_at,
       j.run_at, j.started_at, j.lease_expires_at, j.lost, j.claims, j.snoozes, j.order_at,
       j.workflow_id, j.workflow_input
FROM {schema}.claim_within_caps(
    hashtextextended({jobs_table} || ':caps', 0),
    %(now)s, %(queues)b::text[], %(worker)s, %(limit)s, %(lease_seconds)s,
    %(task_names)b::text[], %(task_caps)b::jsonb,
    %(queue_names)b::text[], %(queue_caps)b::jsonb,
    %(key_caps)b::jsonb
) AS j
