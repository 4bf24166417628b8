-- Settle running jobs whose worker is lost, as transitions.after_lease_expired decides: {lost} is
-- "lease_expires_at < :now" for rescue, "lease_owner = :worker" for release_worker (a worker
-- known to be dead: its supervisor saw the process exit), spliced in by the backend.
-- SET expressions read the row as it was, so "lost + 1" is the loss being recorded now.
-- The error recorded is records.WORKER_LOST: its fixed fields come as :lost_type, :lost_message
-- (one %s for the lease owner), :lost_kind and :lost_cancelled_kind; the row adds its owner, its
-- attempt and :now_json (:now as JSON text, so the error's time keeps every digit of the float).
-- The errors appended to are those of stored_errors.sql, spliced in by the backend.
-- INDEXED BY: without it the planner scans every running job through stagecrew_jobs_state_queue
-- (stagecrew_jobs_lease holds only running jobs, so it serves both).
-- Returns each settled job's new state and workflow_id (the backend runs the fan-in of a member
-- that ended dead or cancelled, in the same write transaction).
UPDATE stagecrew_jobs INDEXED BY stagecrew_jobs_lease
SET state = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempt >= max_attempts OR lost + 1 >= :max_lost THEN 'dead'
        ELSE 'available'
    END,
    finished_at = CASE
        WHEN cancel_requested OR attempt >= max_attempts OR lost + 1 >= :max_lost THEN :now
    END,
    lost = lost + 1,
    order_at = run_at,
    errors = json_insert(
        {stored_errors},
        '$[#]', json_object(
            'attempt', attempt,
            'at', json(:now_json),
            'kind', CASE WHEN cancel_requested THEN :lost_cancelled_kind ELSE :lost_kind END,
            'type', :lost_type,
            'message', printf(:lost_message, coalesce(lease_owner, 'None')),
            'traceback', ''
        )
    ),
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE state = 'running' AND {lost}
RETURNING state, workflow_id
