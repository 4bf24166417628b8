-- A finished job whose idempotency window has passed gives its key up, so that a new job can take it.
UPDATE stagecrew_jobs SET idempotency_key = NULL WHERE id = ?
