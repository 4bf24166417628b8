-- Store a fire the compare-and-set let through (the row is locked by schedule_lock.sql): the new last tick and, when the fire made jobs, the last of them.
UPDATE {schema}.schedules
SET queue = %(queue)s,
    last_tick = %(last_tick)s,
    last_job_id = coalesce(%(last_job_id)s, last_job_id),
    last_job_tick = coalesce(%(last_job_tick)s, last_job_tick),
    last_fired_at = CASE
        WHEN %(last_job_id)s::bigint IS NULL THEN last_fired_at
        ELSE {schema}.store_now(%(now)s)
    END
WHERE name = %(name)s
