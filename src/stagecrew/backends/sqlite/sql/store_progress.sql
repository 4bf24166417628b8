-- Replace job :id's progress, only while it is running claim :token.
UPDATE stagecrew_jobs
SET progress = :progress, progress_at = :now
WHERE id = :id AND claims = :token AND state = 'running'
