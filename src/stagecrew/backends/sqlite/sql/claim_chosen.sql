-- The jobs a capped claim chose (the JSON array :ids), as candidates for claim.sql to take.
SELECT id, priority, order_at
FROM stagecrew_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('available', 'scheduled')
