-- Jobs matching a JobFilter; the backend appends the WHERE terms, ORDER BY id DESC and LIMIT.
SELECT id, task, queue, state, payload, priority, run_at, attempt, max_attempts, enqueued_at,
       started_at, finished_at, lease_owner, lease_expires_at, idempotency_key, cancel_requested,
       lost, result, errors, claims, snoozes, fairness_key, original_priority,
       progress, progress_at, unique_key, unique_states, workflow_id, workflow_step,
       workflow_index, concurrency_key
FROM stagecrew_jobs
