-- Pause or resume a schedule, creating its record; a resume moves last_tick up to :now so that the ticks of the pause are passed over.
INSERT INTO stagecrew_schedules (name, queue, last_tick, paused)
VALUES (:name, :queue, CASE WHEN :paused THEN NULL ELSE :now END, :paused)
ON CONFLICT (name) DO UPDATE SET
    paused = excluded.paused,
    last_tick = CASE
        WHEN excluded.paused OR (last_tick IS NOT NULL AND last_tick >= :now) THEN last_tick
        ELSE :now
    END
RETURNING name, queue, last_tick, last_job_id, last_job_tick, last_fired_at, paused
