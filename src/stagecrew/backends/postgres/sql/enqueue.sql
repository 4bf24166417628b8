-- Insert jobs (already deduplicated within the batch) with ids in input order, skipping stored idempotency keys; wake each queue once.
-- order_at: %(order_ats)s where given (a keyed job's fair order, fair_state.sql) and the job is due
-- now, else run_at.
-- Rows returned, told apart by their first column:
--   'new'    ids: the ids drawn for the jobs, in input order (nextval over the ordered jobs)
--   'key'    id: a job with an idempotency key that was inserted (the others hit a stored key)
--   'stored' id, key, age: the stored job holding a key of this batch, as of this statement's
--            start, and the seconds since it finished (NULL while it is not finished): one past
--            its idempotency window gives the key up (idempotency_release.sql) and the job is
--            tried again
--   'woken'  id: the number of queues notified
-- A keyed job neither inserted nor matched by 'stored' lost a race with a concurrent transaction
-- that stored its key after this statement began: the backend looks it up again. No joins: the
-- plan stays linear in the batch size even when the prepared statement's generic plan is used.
-- {locks} and {locked}: for a batch with two or more keys, the keys' advisory locks
-- (enqueue_lock_keys.sql), taken before the first insert; else empty.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
{locks}numbered AS (
    SELECT nextval({id_sequence}::regclass) AS id, batch.*
    FROM (
        SELECT *
        FROM unnest(
            %(tasks)b::text[], %(queues)b::text[], %(payloads)b::text[], %(priorities)b::integer[],
            %(run_ats)b::double precision[], %(delays)b::double precision[],
            %(max_attempts)b::integer[], %(keys)b::text[], %(order_ats)b::double precision[],
            %(fairness_keys)b::text[], %(concurrency_keys)b::text[]
        ) WITH ORDINALITY
            AS t (task, queue, payload, priority, run_at, delay, max_attempts, idempotency_key,
                  order_at, fairness_key, concurrency_key, ord)
        ORDER BY ord
    ) AS batch
),
inserted AS (
    INSERT INTO {schema}.jobs (
        id, task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, idempotency_key,
        order_at, fairness_key, concurrency_key
    )
    SELECT n.id, n.task, n.queue,
           CASE WHEN coalesce(n.run_at, clock.now + n.delay) > clock.now
                THEN 'scheduled' ELSE 'available' END,
           n.payload, n.priority, coalesce(n.run_at, clock.now + n.delay), n.max_attempts,
           clock.now, n.idempotency_key,
           CASE WHEN n.order_at IS NULL OR coalesce(n.run_at, clock.now + n.delay) > clock.now
                THEN coalesce(n.run_at, clock.now + n.delay) ELSE n.order_at END,
           n.fairness_key, n.concurrency_key
    FROM numbered AS n CROSS JOIN clock{locked}
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue, idempotency_key
)
SELECT 'new', (SELECT array_agg(id ORDER BY ord) FROM numbered), NULL::bigint, NULL::text,
       NULL::double precision
UNION ALL
SELECT 'key', NULL, id, NULL, NULL FROM inserted WHERE idempotency_key IS NOT NULL
UNION ALL
SELECT 'stored', NULL, j.id, j.idempotency_key, clock.now - j.finished_at
FROM {schema}.jobs AS j CROSS JOIN clock
WHERE j.idempotency_key = ANY(%(keys)b::text[]) AND j.idempotency_key IS NOT NULL
UNION ALL
SELECT 'woken', NULL, count(pg_notify(%(channel)s, q.queue)), NULL, NULL
FROM (SELECT DISTINCT queue FROM inserted) AS q
