-- A capped claim's due jobs of the queues in the JSON array :queues that are not paused, after (:priority, :order_at, :id) (used past the per-queue subquery limit).
-- The same jobs are left out as in claim_capped_candidates.sql.
SELECT id, task, queue, concurrency_key, priority, order_at
FROM stagecrew_jobs
WHERE state IN ('available', 'scheduled')
  AND queue IN (SELECT value FROM json_each(:queues))
  AND run_at <= :now
  AND queue NOT IN (SELECT queue FROM stagecrew_paused_queues)
  AND (priority, order_at, id) > (:priority, :order_at, :id)
  AND task NOT IN (SELECT value FROM json_each(:full_tasks))
  AND (concurrency_key IS NULL OR (task, concurrency_key) NOT IN (
      SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
      FROM json_each(:full_keys)))
