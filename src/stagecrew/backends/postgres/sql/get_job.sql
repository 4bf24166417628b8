-- One job by id, with the columns in the order the backend reads a job row.
SELECT id, task, queue, state, payload, priority, run_at, attempt, max_attempts, enqueued_at,
       started_at, finished_at, lease_owner, lease_expires_at, idempotency_key, cancel_requested,
       lost, result, errors, claims, snoozes, fairness_key, original_priority,
       progress, progress_at, unique_key, unique_states, workflow_id, workflow_step,
       workflow_index, concurrency_key
FROM {schema}.jobs
WHERE id = %(id)s
