-- The jobs a capped claim chose (the JSON array :ids), as candidates for claim.sql to take.
-- Chosen under the claim's write lock, so they still wait; read by id, never by state (an
-- index on state would walk every waiting job).
SELECT id, priority, order_at
FROM stagecrew_jobs
WHERE id IN (SELECT value FROM json_each(:ids))
