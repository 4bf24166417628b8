-- Cancel job %(id)s now if it waits, or flag it if it runs (transitions.on_cancel); return the job as it is afterwards.
-- A job cancelled here is final: its id goes to %(finished_channel)s (the last column, which the
-- backend does not read). A flagged running job ends later, by its worker's ack (ack.sql).
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
changed AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN j.state = 'running' THEN 'running' ELSE 'cancelled' END,
        finished_at = CASE WHEN j.state = 'running' THEN j.finished_at ELSE clock.now END,
        cancel_requested = j.cancel_requested OR j.state = 'running'
    FROM clock
    WHERE j.id = %(id)s
      AND j.state IN ('scheduled', 'available', 'running')
    RETURNING j.id, j.task, j.queue, j.state, j.payload, j.priority, j.run_at, j.attempt,
              j.max_attempts, j.enqueued_at, j.started_at, j.finished_at, j.lease_owner,
              j.lease_expires_at, j.idempotency_key, j.cancel_requested, j.lost, j.result, j.errors,
              j.claims, j.snoozes, j.fairness_key, j.original_priority, j.progress, j.progress_at,
              j.unique_key, j.unique_states, j.workflow_id, j.workflow_step, j.workflow_index,
              j.concurrency_key
)
SELECT changed.*,
       (SELECT count(pg_notify(%(finished_channel)s, c.id::text))
        FROM changed AS c WHERE c.state = 'cancelled')
FROM changed
UNION ALL
SELECT id, task, queue, state, payload, priority, run_at, attempt, max_attempts, enqueued_at,
       started_at, finished_at, lease_owner, lease_expires_at, idempotency_key, cancel_requested,
       lost, result, errors, claims, snoozes, fairness_key, original_priority, progress,
       progress_at, unique_key, unique_states, workflow_id, workflow_step, workflow_index,
       concurrency_key, 0
FROM {schema}.jobs
WHERE id = %(id)s AND NOT EXISTS (SELECT FROM changed)
