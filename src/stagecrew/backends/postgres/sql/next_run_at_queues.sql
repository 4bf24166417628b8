-- The earliest run_at of a waiting job in %(queues)s: per queue, the head of each priority in jobs_claim (a skip scan).
-- The head in claim order (priority, order_at) holds the group's earliest run_at (see next_run_at.sql).
WITH RECURSIVE heads (queue, priority, run_at) AS (
    SELECT wanted.queue, head.priority, head.run_at
    FROM unnest(%(queues)b::text[]) AS wanted (queue)
    CROSS JOIN LATERAL (
        SELECT j.priority, j.run_at
        FROM {schema}.jobs AS j
        WHERE j.state IN ('available', 'scheduled') AND j.queue = wanted.queue
        ORDER BY j.priority, j.order_at, j.id
        LIMIT 1
    ) AS head
    UNION ALL
    SELECT heads.queue, head.priority, head.run_at
    FROM heads
    CROSS JOIN LATERAL (
        SELECT j.priority, j.run_at
        FROM {schema}.jobs AS j
        WHERE j.state IN ('available', 'scheduled')
          AND j.queue = heads.queue
          AND j.priority > heads.priority
        ORDER BY j.priority, j.order_at, j.id
        LIMIT 1
    ) AS head
)
SELECT min(run_at) FROM heads
