-- Due jobs of the queues in the JSON array :queues that are not paused (used past the per-queue subquery limit).
SELECT id, priority, order_at
FROM stagecrew_jobs
WHERE state IN ('available', 'scheduled')
  AND queue IN (SELECT value FROM json_each(:queues))
  AND run_at <= :now
  AND queue NOT IN (SELECT queue FROM stagecrew_paused_queues)
