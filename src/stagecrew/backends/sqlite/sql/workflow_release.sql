-- Release the held members of workflow ?3's step ?4: available now (?1), with the step before's outcome ?2 as input.
UPDATE stagecrew_jobs
SET state = 'available', run_at = ?1, order_at = ?1, workflow_input = ?2
WHERE workflow_id = ?3 AND workflow_step = ?4 AND state = 'scheduled'
