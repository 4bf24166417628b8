-- A member failed and the workflow fails (on_failure = fail): it resumes if that member is re-run and succeeds.
UPDATE {schema}.workflows SET status = 'failed'
WHERE id = %(id)s AND status IN ('running', 'failed')
