-- A capped claim's Running: jobs running with a live lease per capped task, per capped queue, and per concurrency key.
-- :tasks and :queues are JSON arrays of the capped names; :keyed is 1 when some task caps keys
-- (else keys are not counted). Each row is (what, name, count), what being 'task', 'queue' or
-- 'key'. A lease that ran out frees its slot at once, before any rescue settles its job.
WITH live AS MATERIALIZED (
    SELECT task, queue, concurrency_key
    FROM stagecrew_jobs
    WHERE state = 'running' AND lease_expires_at > :now
)
SELECT 'task', task, count(*) FROM live
WHERE task IN (SELECT value FROM json_each(:tasks))
GROUP BY task
UNION ALL
SELECT 'queue', queue, count(*) FROM live
WHERE queue IN (SELECT value FROM json_each(:queues))
GROUP BY queue
UNION ALL
SELECT 'key', concurrency_key, count(*) FROM live
WHERE :keyed AND concurrency_key IS NOT NULL
GROUP BY concurrency_key
