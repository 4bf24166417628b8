-- The starvation guard: up to :limit due waiting jobs worse than :floor get one priority step per :every seconds waited since run_at.
-- The new priority is max(:floor, p - whole intervals waited), p the enqueued priority (kept in
-- original_priority from the first change on), and only where that improves the job (aging is
-- never undone). SET expressions read the row as it was.
UPDATE stagecrew_jobs
SET original_priority = coalesce(original_priority, priority),
    priority = max(:floor, coalesce(original_priority, priority)
                           - CAST((:now - run_at) / :every AS INTEGER))
WHERE id IN (
    SELECT id
    FROM stagecrew_jobs
    WHERE state IN ('available', 'scheduled')
      AND priority > :floor
      AND run_at <= :now - :every
      AND max(:floor, coalesce(original_priority, priority)
                      - CAST((:now - run_at) / :every AS INTEGER)) < priority
    ORDER BY id
    LIMIT :limit
)
