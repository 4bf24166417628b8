-- Record one attempt's outcome, fenced: only job :id still running the claim :token changes.
-- A retry or hand-back of a job with a pending cancel request ends it cancelled instead.
-- :run_at is when a retry or a delayed hand-back is due (now + its delay), else NULL; a
-- hand-back or a snooze (:uncounted = 1) gives its attempt back; a snooze (:snoozed = 1) counts
-- one more in snoozes. A job that waits again is ordered by its run_at (order_at = run_at),
-- keyed or not.
-- :result is set where given (a completion's JSON text), else the stored result stays.
-- Returns, where it applied, the job's workflow_id if the job became final (else NULL, and for a
-- job that is no workflow member): the fan-in's input.
-- :error is AttemptError JSON, or NULL to leave errors alone; stored_errors.sql (the backend splices
-- it in) keeps a stored value that is not a JSON array instead of failing the ack.
UPDATE stagecrew_jobs
SET state = CASE
        WHEN cancel_requested AND :state IN ('scheduled', 'available') THEN 'cancelled'
        ELSE :state
    END,
    attempt = attempt - :uncounted,
    snoozes = snoozes + :snoozed,
    run_at = CASE WHEN cancel_requested THEN run_at ELSE coalesce(:run_at, run_at) END,
    order_at = CASE WHEN cancel_requested THEN run_at ELSE coalesce(:run_at, run_at) END,
    finished_at = CASE
        WHEN cancel_requested AND :state IN ('scheduled', 'available') THEN :now
        ELSE coalesce(:finished_at, finished_at)
    END,
    result = coalesce(:result, result),
    errors = CASE
        WHEN :error IS NULL THEN errors
        ELSE json_insert({stored_errors}, '$[#]', json(:error))
    END,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = :id AND claims = :token AND state = 'running'
RETURNING CASE WHEN state IN ('succeeded', 'dead', 'cancelled') THEN workflow_id END
