-- Insert one job unless a stored job holds its idempotency key; wake its queue. The one-by-one path of enqueue.sql.
-- Scalar parameters only, so the prepared statement runs on a generic plan with no planning per
-- call. Rows: ('new', id) if inserted; ('stored', id, seconds since it finished or NULL) for the
-- job already holding the key (as of this statement's start); ('woken', queues notified).
-- Neither 'new' nor 'stored' means a concurrent transaction stored the key meanwhile: the
-- backend looks it up again; so it does after releasing a key whose idempotency window passed.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
inserted AS (
    INSERT INTO {schema}.jobs (
        task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, idempotency_key,
        order_at, fairness_key, concurrency_key
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
           %(fairness_key)s::text, %(concurrency_key)s::text
    FROM clock
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue
)
SELECT 'new', id, NULL::double precision FROM inserted
UNION ALL
SELECT 'stored', j.id, clock.now - j.finished_at
FROM {schema}.jobs AS j CROSS JOIN clock
WHERE j.idempotency_key = %(key)s::text
UNION ALL
SELECT 'woken', count(pg_notify(%(channel)s, queue)), NULL FROM inserted
