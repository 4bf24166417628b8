-- The order_at of the head of queue :queue's due jobs at priority :priority (the fair order's virtual time).
SELECT order_at
FROM stagecrew_jobs
WHERE state IN ('available', 'scheduled') AND queue = :queue AND priority = :priority
  AND run_at <= :now
ORDER BY priority, order_at, id
LIMIT 1
