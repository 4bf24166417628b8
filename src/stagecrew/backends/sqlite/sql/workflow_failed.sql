-- A member failed and the workflow fails (on_failure = fail): it resumes if that member is re-run and succeeds.
UPDATE stagecrew_workflows SET status = 'failed' WHERE id = ? AND status IN ('running', 'failed')
