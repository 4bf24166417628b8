-- Cancel every waiting or held member of workflow :id now, and ask its running ones to stop (as cancel.sql).
UPDATE stagecrew_jobs
SET state = CASE WHEN state IN ('scheduled', 'available') THEN 'cancelled' ELSE state END,
    finished_at = CASE WHEN state IN ('scheduled', 'available') THEN :now ELSE finished_at END,
    cancel_requested = CASE WHEN state = 'running' THEN 1 ELSE cancel_requested END
WHERE workflow_id = :id AND state IN ('scheduled', 'available', 'running')
