-- Every stored member of workflow %(id)s, by (step, index), with the columns job_from_row reads.
SELECT id, task, queue, state, payload, priority, run_at, attempt, max_attempts, enqueued_at,
       started_at, finished_at, lease_owner, lease_expires_at, idempotency_key, cancel_requested,
       lost, result, errors, claims, snoozes, fairness_key, original_priority,
       progress, progress_at, unique_key, unique_states, workflow_id, workflow_step,
       workflow_index, concurrency_key
FROM {schema}.jobs
WHERE workflow_id = %(id)s
ORDER BY workflow_step, workflow_index
