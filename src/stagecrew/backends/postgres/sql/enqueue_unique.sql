-- Insert one job with a unique key unless a stored job holds its idempotency key or its unique key; wake its queue.
-- Rows: ('new', id) if inserted; ('stored', id) for the job holding the idempotency key,
-- ('held', id) for the job holding the unique key (both as of this statement's start);
-- ('woken', queues notified). None of 'new', 'stored' and 'held' means a concurrent transaction
-- took a key meanwhile: the backend runs the statement again.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
inserted AS (
    INSERT INTO {schema}.jobs (
        task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, idempotency_key,
        order_at, fairness_key, unique_key, unique_states, concurrency_key
    )
    SELECT %(task)s, %(queue)s,
           CASE WHEN coalesce(%(run_at)s::double precision, clock.now + %(delay)s::double precision)
                     > clock.now
                THEN 'scheduled' ELSE 'available' END,
           %(payload)s, %(priority)s::integer,
           coalesce(%(run_at)s::double precision, clock.now + %(delay)s::double precision),
           %(max_attempts)s::integer, clock.now, %(key)s::text,
           CASE WHEN %(order_at)s::double precision IS NULL
                     OR coalesce(%(run_at)s::double precision, clock.now + %(delay)s::double precision)
                        > clock.now
                THEN coalesce(%(run_at)s::double precision, clock.now + %(delay)s::double precision)
                ELSE %(order_at)s::double precision END,
           %(fairness_key)s::text, %(unique_key)s::text, %(unique_states)s::text,
           %(concurrency_key)s::text
    FROM clock
    ON CONFLICT DO NOTHING
    RETURNING id, queue
)
SELECT 'new', id FROM inserted
UNION ALL
SELECT 'stored', j.id FROM {schema}.jobs AS j WHERE j.idempotency_key = %(key)s::text
UNION ALL
SELECT 'held', j.id
FROM {schema}.jobs AS j
WHERE j.unique_key = %(unique_key)s::text
  AND j.unique_key IS NOT NULL AND strpos(j.unique_states, j.state) > 0
UNION ALL
SELECT 'woken', count(pg_notify(%(channel)s, queue)) FROM inserted
