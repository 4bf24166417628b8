-- Delete up to :limit buckets whose minute began before :horizon.
DELETE FROM stagecrew_job_counts
WHERE (bucket, queue, task, outcome) IN (
    SELECT bucket, queue, task, outcome FROM stagecrew_job_counts
    WHERE bucket < :horizon
    LIMIT :limit
)
