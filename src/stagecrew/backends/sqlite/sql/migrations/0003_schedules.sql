-- Schema version 3: one row per schedule, the state a compare-and-set on last_tick guards.

-- last_tick: ticks at or before this time are done (fired, or passed over); a fire applies
-- only while it still holds the value the scheduler read, in the write transaction that
-- inserts the tick's jobs. last_job_id / last_job_tick: the job the last fired tick made
-- (no foreign key: retention may delete the job, the record stays). Times are epoch seconds.
CREATE TABLE IF NOT EXISTS stagecrew_schedules (
    name          TEXT    PRIMARY KEY,
    queue         TEXT    NOT NULL,
    last_tick     REAL,
    last_job_id   INTEGER,
    last_job_tick REAL,
    last_fired_at REAL,
    paused        INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1))
);
