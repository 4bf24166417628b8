-- Every schedule record, with the columns in the order _schedule_from_row reads them.
SELECT name, queue, last_tick, last_job_id, last_job_tick, last_fired_at, paused
FROM stagecrew_schedules
ORDER BY name
