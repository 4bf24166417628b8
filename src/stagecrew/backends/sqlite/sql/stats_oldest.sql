-- Per queue, the run_at of the longest-waiting due job.
SELECT queue, min(run_at)
FROM stagecrew_jobs
WHERE state IN ('available', 'scheduled') AND run_at <= :now
GROUP BY queue
