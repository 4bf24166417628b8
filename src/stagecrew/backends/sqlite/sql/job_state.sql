-- The state of job :id alone, for wait_finished: a primary-key read without its payload or result.
SELECT state
FROM stagecrew_jobs
WHERE id = :id
