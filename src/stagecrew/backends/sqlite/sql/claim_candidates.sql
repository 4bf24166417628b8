-- The first :limit due jobs of queue :queue, read in claim order straight off stagecrew_jobs_claim; none while it is paused.
SELECT * FROM (
    SELECT id, priority, order_at
    FROM stagecrew_jobs
    WHERE state IN ('available', 'scheduled') AND queue = :queue AND run_at <= :now
      AND NOT EXISTS (SELECT 1 FROM stagecrew_paused_queues WHERE queue = :queue)
    ORDER BY priority, order_at, id
    LIMIT :limit
)
