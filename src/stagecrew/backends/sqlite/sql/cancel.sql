-- Cancel job :id now if it waits, or flag a running one (transitions.on_cancel); finished jobs stay.
UPDATE stagecrew_jobs
SET state = CASE WHEN state IN ('scheduled', 'available') THEN 'cancelled' ELSE state END,
    finished_at = CASE WHEN state IN ('scheduled', 'available') THEN :now ELSE finished_at END,
    cancel_requested = CASE WHEN state = 'running' THEN 1 ELSE cancel_requested END
WHERE id = :id AND state IN ('scheduled', 'available', 'running')
RETURNING id, task, queue, state, payload, priority, run_at, attempt, max_attempts, enqueued_at,
          started_at, finished_at, lease_owner, lease_expires_at, idempotency_key, cancel_requested,
          lost, result, errors, claims, snoozes, fairness_key, original_priority,
          progress, progress_at, unique_key, unique_states, workflow_id, workflow_step,
          workflow_index, concurrency_key
