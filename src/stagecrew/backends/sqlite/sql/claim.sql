-- Claim the first :limit due jobs, in (priority, order_at, id) order, among the per-queue candidates the backend splices in below.
-- Each claim counts one more in claims: the value returned is the claim's fencing token.
-- The last column says whether the row holds what stagecrew wrote (SQLite columns take values
-- of any type): the backend reads a batch with a damaged row again, leniently.
UPDATE stagecrew_jobs
SET state = 'running',
    attempt = attempt + 1,
    claims = claims + 1,
    lease_owner = :worker,
    lease_expires_at = :lease_expires_at,
    started_at = :now
WHERE id IN (
    SELECT id FROM ({candidates})
    ORDER BY priority, order_at, id
    LIMIT :limit
)
RETURNING id, task, queue, payload, attempt, max_attempts, priority, enqueued_at, run_at, lost,
    claims, snoozes,
    typeof(task) = 'text' AND typeof(payload) = 'text' AND typeof(max_attempts) = 'integer'
    AND typeof(priority) = 'integer' AND typeof(enqueued_at) IN ('real', 'integer')
    AND typeof(run_at) IN ('real', 'integer') AND typeof(lost) = 'integer',
    order_at, workflow_id, workflow_input
