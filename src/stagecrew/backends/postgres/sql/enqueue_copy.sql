-- Bulk-insert jobs without idempotency or fairness keys (ids, states and times computed from enqueue_reserve.sql; order_at = run_at).
COPY {schema}.jobs (id, task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, order_at,
    concurrency_key)
FROM STDIN (FORMAT BINARY)
