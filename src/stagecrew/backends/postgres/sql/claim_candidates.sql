-- Read and lock up to %(read)s due jobs of %(queues)s in (priority, order_at, id) order for a capped claim, leaving out the jobs of full tasks and full (task, key) pairs, skipping rows other claimers hold and paused queues.
-- The backend leaves the full queues out of %(queues)s; %(full_tasks)s are the tasks whose cap is
-- full, and each (%(full_key_tasks)s[i], %(full_keys)s[i]) a task that caps keys and a key that
-- at least that task's cap of running jobs hold. So every row read is within its caps as read
-- (claim_running.sql counted them in this transaction, under the lock of capped claims); the
-- backend then applies caps.select_within_caps in this order and claims what it chose
-- (claim_chosen.sql), in this transaction, which holds the rows' locks meanwhile. Each queue's head
-- is read off jobs_claim in order, as claim.sql reads it; the filters test the rows it finds.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
)
SELECT head.id, head.task, head.queue, head.concurrency_key
FROM (
    SELECT w.queue
    FROM unnest(%(queues)b::text[]) AS w (queue)
    WHERE NOT EXISTS (SELECT FROM {schema}.paused_queues AS p WHERE p.queue = w.queue)
) AS wanted
CROSS JOIN clock
CROSS JOIN LATERAL (
    SELECT j.id, j.task, j.queue, j.concurrency_key, j.priority, j.order_at
    FROM {schema}.jobs AS j
    WHERE j.state IN ('available', 'scheduled')
      AND j.queue = wanted.queue
      AND j.run_at <= clock.now
      AND j.task <> ALL(%(full_tasks)b::text[])
      AND NOT EXISTS (
          SELECT
          FROM unnest(%(full_key_tasks)b::text[], %(full_keys)b::text[]) AS f (task, key)
          WHERE f.task = j.task AND f.key = j.concurrency_key
      )
    ORDER BY j.priority, j.order_at, j.id
    LIMIT %(read)s
    FOR UPDATE SKIP LOCKED
) AS head
ORDER BY head.priority, head.order_at, head.id
LIMIT %(read)s
