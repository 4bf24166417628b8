-- Claim the jobs %(ids)s a capped claim chose among its candidates (claim_candidates.sql), as claim.sql claims what it reads.
-- This transaction has held the rows' locks since it read them, so they are still due and waiting.
-- SET and RETURNING are claim.sql's, column for column: the backend reads both statements' rows
-- alike (a test holds the two files to it).
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
)
UPDATE {schema}.jobs AS j
SET state = 'running',
    attempt = j.attempt + 1,
    claims = j.claims + 1,
    lease_owner = %(worker)s,
    lease_expires_at = clock.now + %(lease_seconds)s,
    started_at = clock.now
FROM clock
WHERE j.id = ANY(%(ids)b::bigint[])
RETURNING j.id, j.task, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.enqueued_at,
          j.run_at, j.started_at, j.lease_expires_at, j.lost, j.claims, j.snoozes, j.order_at,
          j.workflow_id, j.workflow_input
