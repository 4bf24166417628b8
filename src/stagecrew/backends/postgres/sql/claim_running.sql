-- Count the running jobs with a live lease that hold a slot of a capped task (%(tasks)s) or queue (%(queues)s), or of a concurrency key (when %(keyed)s): what a capped claim checks its caps against.
-- A lease that expired frees its slot at once, before any rescue settles the job. Rows are grouped
-- by (task, queue, concurrency_key), each with its count; the backend adds them up (caps.Running).
-- Only running jobs are read (lease_expires_at > now is a range of jobs_lease, which holds the
-- running jobs only): at most as many as the fleet has slots, however many jobs wait.
SELECT task, queue, concurrency_key, count(*)
FROM {schema}.jobs
WHERE state = 'running'
  AND lease_expires_at > {schema}.store_now(%(now)s)
  AND (task = ANY(%(tasks)b::text[])
       OR queue = ANY(%(queues)b::text[])
       OR (%(keyed)s AND concurrency_key IS NOT NULL))
GROUP BY task, queue, concurrency_key
