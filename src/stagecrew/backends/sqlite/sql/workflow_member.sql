-- Give a new member job (?4) its place: workflow ?1, step ?2, index ?3.
UPDATE stagecrew_jobs SET workflow_id = ?1, workflow_step = ?2, workflow_index = ?3 WHERE id = ?4
