-- The jobs a capped claim chose (the JSON array :ids), as candidates for claim.sql to take.
-- Chosen under the claim's write lock, so they still wait; the state is checked all the same,
-- as a guard, but after the lookup by id: `+state` keeps the planner off the indexes on state,
-- which would walk every waiting job.
SELECT id, priority, order_at
FROM stagecrew_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND +state IN ('available', 'scheduled')
