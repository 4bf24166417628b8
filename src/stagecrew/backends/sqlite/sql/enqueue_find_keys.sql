-- Find the stored jobs that already hold any of the idempotency keys in the JSON array ?1.
SELECT idempotency_key, id
FROM stagecrew_jobs
WHERE idempotency_key IN (SELECT value FROM json_each(?1))
