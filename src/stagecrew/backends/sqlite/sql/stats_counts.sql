-- How many jobs each queue holds in each state (a covering scan of stagecrew_jobs_state_queue).
SELECT queue, state, count(*)
FROM stagecrew_jobs
GROUP BY state, queue
