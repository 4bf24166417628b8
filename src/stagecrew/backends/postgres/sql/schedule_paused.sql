-- Pause or resume a schedule, creating its record; a resume moves last_tick up to %(at)s so that the ticks of the pause are passed over.
INSERT INTO {schema}.schedules AS s (name, queue, last_tick, paused)
VALUES (%(name)s, %(queue)s, CASE WHEN %(paused)s THEN NULL ELSE %(at)s END, %(paused)s)
ON CONFLICT (name) DO UPDATE SET
    paused = excluded.paused,
    last_tick = CASE
        WHEN excluded.paused OR s.last_tick >= %(at)s THEN s.last_tick
        ELSE %(at)s
    END
RETURNING s.name, s.queue, s.last_tick, s.last_job_id, s.last_job_tick, s.last_fired_at, s.paused
