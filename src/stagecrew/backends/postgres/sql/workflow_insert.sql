-- Store a new workflow's record (running, at step 0) and its members in one statement; returns the members' ids in input order.
-- Members of step 0 are due now; the others are held: scheduled at %(held_at)s, which no claim
-- reaches, until the fan-in releases their step (workflow_release.sql).
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
record AS (
    INSERT INTO {schema}.workflows (id, status, step, shape, on_failure, created_at)
    SELECT %(id)s, 'running', 0, %(shape)s, %(on_failure)s, clock.now FROM clock
),
numbered AS (
    SELECT nextval({id_sequence}::regclass) AS id, batch.*
    FROM (
        SELECT *
        FROM unnest(
            %(tasks)b::text[], %(queues)b::text[], %(payloads)b::text[], %(priorities)b::integer[],
            %(max_attempts)b::integer[], %(steps)b::integer[], %(indexes)b::integer[]
        ) WITH ORDINALITY
            AS t (task, queue, payload, priority, max_attempts, step, index, ord)
        ORDER BY ord
    ) AS batch
),
inserted AS (
    INSERT INTO {schema}.jobs (
        id, task, queue, state, payload, priority, run_at, max_attempts, enqueued_at, order_at,
        workflow_id, workflow_step, workflow_index
    )
    SELECT n.id, n.task, n.queue,
           CASE WHEN n.step = 0 THEN 'available' ELSE 'scheduled' END,
           n.payload, n.priority,
           CASE WHEN n.step = 0 THEN clock.now ELSE %(held_at)s END,
           n.max_attempts, clock.now,
           CASE WHEN n.step = 0 THEN clock.now ELSE %(held_at)s END,
           %(id)s, n.step, n.index
    FROM numbered AS n CROSS JOIN clock
)
SELECT n.id,
       (SELECT count(pg_notify(%(channel)s, q.queue))
        FROM (SELECT DISTINCT queue FROM numbered WHERE step = 0) AS q)
FROM numbered AS n
ORDER BY n.ord
