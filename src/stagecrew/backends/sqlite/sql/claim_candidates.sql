-- The first :limit due jobs of queue :queue, read in claim order straight off stagecrew_jobs_claim; none while it is paused.
SELECT * FROM (
    SELECT id, priority, run_at
    FROM stagecrew_jobs
    WHERE state IN ('available', 'scheduled') AND queue = :queue AND run_at <= :now
      AND NOT EXISTS (SELECT 1 FROM stagecrew_paused_queues WHERE queue = :queue)
    ORDER BY priority, run_at, id
    LIMIT :limit
)
