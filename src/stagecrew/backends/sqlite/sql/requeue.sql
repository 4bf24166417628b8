-- Make dead and cancelled jobs available again from attempt 0 and no snooze (errors kept); the backend appends
-- the JobFilter terms with AND. OR IGNORE: a job whose unique key another job holds stays as it is (uniqueness.md).
UPDATE OR IGNORE stagecrew_jobs
SET state = 'available',
    attempt = 0,
    lost = 0,
    snoozes = 0,
    run_at = :now,
    order_at = :now,
    finished_at = NULL,
    cancel_requested = 0
WHERE state IN ('dead', 'cancelled')
