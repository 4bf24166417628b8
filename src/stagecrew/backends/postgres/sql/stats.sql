-- Jobs per queue and state, and per queue and waiting state the age of the longest-waiting due job, by the store clock.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
)
SELECT j.queue,
       j.state,
       count(*),
       clock.now - min(j.run_at) FILTER (
           WHERE j.state IN ('available', 'scheduled') AND j.run_at <= clock.now
       )
FROM {schema}.jobs AS j CROSS JOIN clock
GROUP BY j.queue, j.state, clock.now
