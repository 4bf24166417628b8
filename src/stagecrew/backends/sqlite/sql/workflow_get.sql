-- One workflow's record, its columns in the order _read_workflow reads them.
SELECT id, status, step, shape, on_failure, created_at, finished_at, result
FROM stagecrew_workflows
WHERE id = ?
