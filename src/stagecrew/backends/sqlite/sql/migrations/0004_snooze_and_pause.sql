-- Schema version 4: snoozes counted per job, and the paused queues.

-- A task that raises Snooze runs again later with its attempt given back; this counts those
-- snoozes, so that the task's max_snoozes can bound a job that keeps snoozing.
ALTER TABLE stagecrew_jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;

-- One row per paused queue. The claim reads it in the same statement that takes jobs, so a
-- pause holds from the first claim that starts after it commits; jobs keep being enqueued.
CREATE TABLE IF NOT EXISTS stagecrew_paused_queues (
    queue     TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
) WITHOUT ROWID;
