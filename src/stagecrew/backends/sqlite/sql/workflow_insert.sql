-- Store a new workflow's record: running, at step 0, with its shape, failure mode and creation time.
INSERT INTO stagecrew_workflows (id, status, step, shape, on_failure, created_at)
VALUES (?, 'running', 0, ?, ?, ?)
