-- Cancel workflow %(id)s unless it succeeded or was cancelled: its waiting and held members now, its running ones by request (as cancel.sql); it never advances again.
-- The members are updated first, then the record: the order every fan-in takes its locks in
-- (a member's row by its ack, then the record), so the two cannot deadlock. Data-modifying
-- CTEs always run to completion, read or not.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
live AS (
    SELECT id FROM {schema}.workflows
    WHERE id = %(id)s AND status IN ('running', 'failed')
),
members AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN j.state = 'running' THEN 'running' ELSE 'cancelled' END,
        finished_at = CASE WHEN j.state = 'running' THEN j.finished_at ELSE clock.now END,
        cancel_requested = j.cancel_requested OR j.state = 'running'
    FROM clock
    WHERE j.workflow_id = %(id)s AND j.state IN ('scheduled', 'available', 'running')
      AND EXISTS (SELECT FROM live)
    RETURNING j.id, j.state
)
UPDATE {schema}.workflows AS w
SET status = 'cancelled', finished_at = clock.now
FROM clock
WHERE w.id IN (SELECT id FROM live)
RETURNING w.id
