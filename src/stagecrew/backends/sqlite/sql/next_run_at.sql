-- The earliest run_at of any waiting job.
SELECT min(run_at)
FROM stagecrew_jobs
WHERE state IN ('available', 'scheduled')
