-- Every schedule record, with the columns in the order the backend reads a schedule row.
SELECT name, queue, last_tick, last_job_id, last_job_tick, last_fired_at, paused
FROM {schema}.schedules
ORDER BY name
