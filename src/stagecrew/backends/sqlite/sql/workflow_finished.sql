-- The workflow's last step finished: its status, result and finish time.
UPDATE stagecrew_workflows SET status = ?, result = ?, finished_at = ?
WHERE id = ? AND status IN ('running', 'failed')
