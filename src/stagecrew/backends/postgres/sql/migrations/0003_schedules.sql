-- Schema version 3: one row per schedule, the state a compare-and-set on last_tick guards.

-- last_tick: ticks at or before this time are done (fired, or passed over). A fire locks the
-- row, applies only while last_tick still holds the value the scheduler read, and inserts the
-- tick's jobs in the same transaction. last_job_id / last_job_tick: the job the last fired
-- tick made (no foreign key: retention may delete the job, the record stays). Times are
-- epoch seconds, as everywhere in stagecrew.
CREATE TABLE {schema}.schedules (
    name          text             PRIMARY KEY,
    queue         text             NOT NULL,
    last_tick     double precision,
    last_job_id   bigint,
    last_job_tick double precision,
    last_fired_at double precision,
    paused        boolean          NOT NULL DEFAULT false
);
