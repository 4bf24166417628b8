-- A capped claim's due jobs of queue :queue after (:priority, :order_at, :id), read in claim order off stagecrew_jobs_claim; none while it is paused.
-- Left out here: jobs of a task whose cap is full (:full_tasks, a JSON array of tasks), and
-- jobs whose key is full for their task (:full_keys, a JSON array of [task, key] pairs): the
-- caps full when the page is read; the backend decides the rest (caps this claim fills). A
-- queue whose cap is full is not read at all.
SELECT * FROM (
    SELECT id, task, queue, concurrency_key, priority, order_at
    FROM stagecrew_jobs
    WHERE state IN ('available', 'scheduled') AND queue = :queue AND run_at <= :now
      AND NOT EXISTS (SELECT 1 FROM stagecrew_paused_queues WHERE queue = :queue)
      AND (priority, order_at, id) > (:priority, :order_at, :id)
      AND task NOT IN (SELECT value FROM json_each(:full_tasks))
      AND (concurrency_key IS NULL OR (task, concurrency_key) NOT IN (
          SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
          FROM json_each(:full_keys)))
    ORDER BY priority, order_at, id
    LIMIT :page
)
