-- A capped claim's due jobs of queue :queue after (:priority, :order_at, :id), read in claim order off stagecrew_jobs_claim; none while it is paused.
-- Left out here: jobs of a task whose cap is full (:full_tasks), and jobs of a task that caps
-- keys (:key_tasks) whose key is full for every such task (:full_keys), all JSON arrays; a
-- task that caps no keys is not held back by its key. The backend decides the rest. A queue
-- whose cap is full is not read at all.
SELECT * FROM (
    SELECT id, task, queue, concurrency_key, priority, order_at
    FROM stagecrew_jobs
    WHERE state IN ('available', 'scheduled') AND queue = :queue AND run_at <= :now
      AND NOT EXISTS (SELECT 1 FROM stagecrew_paused_queues WHERE queue = :queue)
      AND (priority, order_at, id) > (:priority, :order_at, :id)
      AND task NOT IN (SELECT value FROM json_each(:full_tasks))
      AND (concurrency_key IS NULL
           OR concurrency_key NOT IN (SELECT value FROM json_each(:full_keys))
           OR task NOT IN (SELECT value FROM json_each(:key_tasks)))
    ORDER BY priority, order_at, id
    LIMIT :page
)
