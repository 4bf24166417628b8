-- The fan-in's compare-and-set: the workflow moves on to its next step (once: the caller holds the write lock).
UPDATE stagecrew_workflows SET status = 'running', step = step + 1
WHERE id = ? AND status IN ('running', 'failed')
