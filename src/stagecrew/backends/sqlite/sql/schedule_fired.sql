-- Store a fire that the compare-and-set let through: the new last tick and, when the fire made jobs, the last of them (run under the write lock, after the CAS read).
INSERT INTO stagecrew_schedules (name, queue, last_tick, last_job_id, last_job_tick, last_fired_at)
VALUES (
    :name, :queue, :last_tick, :last_job_id, :last_job_tick,
    CASE WHEN :last_job_id IS NULL THEN NULL ELSE :now END
)
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue,
    last_tick = excluded.last_tick,
    last_job_id = coalesce(excluded.last_job_id, last_job_id),
    last_job_tick = coalesce(excluded.last_job_tick, last_job_tick),
    last_fired_at = CASE WHEN excluded.last_job_id IS NULL THEN last_fired_at ELSE :now END
