-- The starvation guard: up to %(limit)s due waiting jobs worse than %(floor)s get one priority step per %(every)s seconds waited since run_at.
-- The new priority is greatest(%(floor)s, p - whole intervals waited), p the enqueued priority
-- (kept in original_priority from the first change on), and only where that improves the job
-- (aging is never undone). Rows a claim holds right now are skipped: the next pass sees them.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
),
aged AS (
    SELECT j.id
    FROM {schema}.jobs AS j CROSS JOIN clock
    WHERE j.state IN ('available', 'scheduled')
      AND j.priority > %(floor)s
      AND j.run_at <= clock.now - %(every)s
      AND greatest(%(floor)s, coalesce(j.original_priority, j.priority)
                              - floor((clock.now - j.run_at) / %(every)s)::integer) < j.priority
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET original_priority = coalesce(j.original_priority, j.priority),
    priority = greatest(%(floor)s, coalesce(j.original_priority, j.priority)
                                   - floor((clock.now - j.run_at) / %(every)s)::integer)
FROM clock
WHERE j.id = ANY(ARRAY(SELECT id FROM aged))
