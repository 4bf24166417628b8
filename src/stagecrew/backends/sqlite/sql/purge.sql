-- Delete finished jobs, never waiting or running ones; the backend appends the JobFilter terms with AND.
DELETE FROM stagecrew_jobs
WHERE state IN ('succeeded', 'dead', 'cancelled')
