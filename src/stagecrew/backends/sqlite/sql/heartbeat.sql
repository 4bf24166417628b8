-- Extend one lease, only while :worker still holds the claim :token of job :id; report a pending cancel.
UPDATE stagecrew_jobs
SET lease_expires_at = :lease_expires_at
WHERE id = :id AND claims = :token AND state = 'running' AND lease_owner = :worker
RETURNING cancel_requested
