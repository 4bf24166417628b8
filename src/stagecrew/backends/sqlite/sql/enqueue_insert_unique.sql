-- Insert one new job with a unique key (enqueue_insert.sql's columns, then unique_key and unique_states).
INSERT INTO stagecrew_jobs (
    task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, idempotency_key,
    order_at, fairness_key, concurrency_key, unique_key, unique_states
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
