-- Job :id's steps and checkpoint, in the order they were first stored.
SELECT kind, name, value, stored_at FROM stagecrew_steps WHERE job_id = :id ORDER BY rowid
