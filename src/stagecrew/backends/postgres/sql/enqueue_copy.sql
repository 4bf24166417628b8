-- Bulk-insert jobs without idempotency keys (ids, states and times computed from enqueue_reserve.sql).
COPY {schema}.jobs (id, task, queue, state, payload, priority, run_at, max_attempts, enqueued_at)
FROM STDIN (FORMAT BINARY)
