-- Insert one new job; run for every row of a batch inside one write transaction, so ids are consecutive.
INSERT INTO stagecrew_jobs (
    task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, idempotency_key,
    order_at, fairness_key, concurrency_key
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
