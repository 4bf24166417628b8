-- The earliest run_at of a waiting job in the queues of the JSON array :queues.
SELECT min(run_at)
FROM stagecrew_jobs
WHERE state IN ('available', 'scheduled') AND queue IN (SELECT value FROM json_each(:queues))
