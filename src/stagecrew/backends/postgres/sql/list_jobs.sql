-- Jobs matching a JobFilter, newest first (the backend splices in the filter's terms).
SELECT id, task, queue, state, payload, priority, run_at, attempt, max_attempts, enqueued_at,
       started_at, finished_at, lease_owner, lease_expires_at, idempotency_key, cancel_requested,
       lost, result, errors, claims, snoozes, fairness_key, original_priority,
       progress, progress_at, unique_key, unique_states, workflow_id, workflow_step,
       workflow_index, concurrency_key
FROM {schema}.jobs
WHERE true {filter}
ORDER BY id DESC
LIMIT %(f_limit)s
