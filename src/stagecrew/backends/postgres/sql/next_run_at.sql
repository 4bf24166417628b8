-- The earliest run_at of any waiting job: the head of each (queue, priority) in jobs_claim, found by a skip scan.
-- The head of each group in claim order (priority, order_at) is its earliest run_at (order_at is
-- run_at, or for a keyed job due at enqueue no later than the group's due jobs), so the recursion visits one index entry per
-- group instead of every waiting job (a million scheduled jobs cost a handful of lookups).
WITH RECURSIVE heads (queue, priority, run_at) AS (
    (SELECT queue, priority, run_at
     FROM {schema}.jobs
     WHERE state IN ('available', 'scheduled')
     ORDER BY queue, priority, order_at, id
     LIMIT 1)
    UNION ALL
    SELECT head.queue, head.priority, head.run_at
    FROM heads
    CROSS JOIN LATERAL (
        SELECT j.queue, j.priority, j.run_at
        FROM {schema}.jobs AS j
        WHERE j.state IN ('available', 'scheduled')
          AND (j.queue, j.priority) > (heads.queue, heads.priority)
        ORDER BY j.queue, j.priority, j.order_at, j.id
        LIMIT 1
    ) AS head
)
SELECT min(run_at) FROM heads
