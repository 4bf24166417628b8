-- The buckets whose minute began at or after now - %(since)s and the store's now, which the first column of every row holds (one row of NULLs after it when there is none).
SELECT n.now, c.bucket, c.queue, c.task, c.outcome, c.n
FROM (SELECT {schema}.store_now(%(now)s) AS now) AS n
LEFT JOIN {schema}.job_counts AS c ON c.bucket >= n.now - %(since)s
ORDER BY c.bucket, c.queue COLLATE "C", c.task COLLATE "C", c.outcome COLLATE "C"
