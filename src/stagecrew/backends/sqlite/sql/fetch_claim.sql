-- Claim the first :limit due jobs among the per-queue candidates the backend splices in below.
UPDATE stagecrew_jobs
SET state = 'running',
    attempt = attempt + 1,
    lease_owner = :worker,
    lease_expires_at = :lease_expires_at,
    started_at = :now
WHERE id IN (
    SELECT id FROM ({candidates})
    ORDER BY priority, run_at, id
    LIMIT :limit
)
RETURNING id, task, queue, payload, attempt, max_attempts, priority, enqueued_at, run_at
