-- The fan-in's advance: workflow %(id)s moves from step %(step)s to the next, whose held members become available now with %(input)s as their input; their queues are woken.
-- The compare-and-set on step makes the advance happen once, and the release happens only with it.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
advanced AS (
    UPDATE {schema}.workflows
    SET status = 'running', step = step + 1
    WHERE id = %(id)s AND step = %(step)s AND status IN ('running', 'failed')
    RETURNING id
),
released AS (
    UPDATE {schema}.jobs AS j
    SET state = 'available', run_at = clock.now, order_at = clock.now, workflow_input = %(input)s
    FROM clock
    WHERE j.workflow_id = %(id)s AND j.workflow_step = %(step)s + 1 AND j.state = 'scheduled'
      AND EXISTS (SELECT FROM advanced)
    RETURNING j.queue
)
SELECT (SELECT count(*) FROM advanced),
       (SELECT count(pg_notify(%(channel)s, q.queue)) FROM (SELECT DISTINCT queue FROM released) AS q)
