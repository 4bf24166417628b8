-- Add :n to the count of (:bucket, :queue, :task, :outcome), creating it at :n.
INSERT INTO stagecrew_job_counts (bucket, queue, task, outcome, n)
VALUES (:bucket, :queue, :task, :outcome, :n)
ON CONFLICT (bucket, queue, task, outcome) DO UPDATE SET n = n + excluded.n
