-- Schema version 4: snoozes counted per job, and the paused queues.

-- A task that raises Snooze runs again later with its attempt given back; this counts those
-- snoozes, so that the task's max_snoozes can bound a job that keeps snoozing. A constant
-- default rewrites nothing.
ALTER TABLE {schema}.jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;

-- One row per paused queue. The claim reads it in the same statement that takes jobs, so a
-- pause holds from the first claim that starts after it commits; jobs keep being enqueued.
CREATE TABLE {schema}.paused_queues (
    queue     text             PRIMARY KEY,
    paused_at double precision NOT NULL
);
