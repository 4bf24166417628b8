-- What the fan-in reads of the members of workflow ?1's step ?2, by index.
SELECT workflow_index, state, result, errors
FROM stagecrew_jobs
WHERE workflow_id = ?1 AND workflow_step = ?2
ORDER BY workflow_index
