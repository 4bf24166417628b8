-- Find the stored jobs that already hold any of the idempotency keys in the JSON array ?1, with their state and finish time (the window).
SELECT idempotency_key, id, state, finished_at
FROM stagecrew_jobs
WHERE idempotency_key IN (SELECT value FROM json_each(?1))
