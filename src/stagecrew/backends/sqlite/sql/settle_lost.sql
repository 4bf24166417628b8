-- Settle running jobs whose worker is lost, as transitions.after_lease_expired decides: {lost} is
-- "lease_expires_at < :now" for rescue, "lease_owner = :worker" for release_worker (a worker
-- known to be dead: its supervisor saw the process exit), spliced in by the backend.
-- SET expressions read the row as it was, so "lost + 1" is the loss being recorded now.
-- :now_json is :now as JSON text, so the error's time keeps every digit of the float.
-- INDEXED BY: without it the planner scans every running job through stagecrew_jobs_state_queue
-- (stagecrew_jobs_lease holds only running jobs, so it serves both).
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
    errors = json_insert(
        coalesce(
            CASE WHEN json_valid(coalesce(errors, '[]')) THEN
                CASE WHEN json_type(coalesce(errors, '[]')) = 'array'
                    THEN coalesce(errors, '[]') END
            END,
            json_array(json_object(
                'attempt', 0, 'at', 0.0, 'kind', 'error', 'type', 'CorruptErrorRecord',
                'message', 'the stored errors of this job were not a JSON array',
                'traceback', errors
            ))
        ),
        '$[#]', json_object(
            'attempt', attempt,
            'at', json(:now_json),
            'kind', CASE WHEN cancel_requested THEN 'cancelled' ELSE 'lost' END,
            'type', 'WorkerLost',
            'message', 'worker ' || coalesce(lease_owner, 'None') || ' lost its lease (worker lost)',
            'traceback', ''
        )
    ),
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE state = 'running' AND {lost}
RETURNING state
