-- The buckets whose minute began at or after :since, in the order CountHistory keeps them.
SELECT bucket, queue, task, outcome, n
FROM stagecrew_job_counts
WHERE bucket >= :since
ORDER BY bucket, queue, task, outcome
