-- One workflow's record, its columns in the order the backend reads them.
SELECT id, status, step, shape, on_failure, created_at, finished_at, result
FROM {schema}.workflows
WHERE id = %(id)s
