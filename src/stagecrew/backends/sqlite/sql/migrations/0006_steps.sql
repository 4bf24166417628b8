-- Schema version 6: durable steps and checkpoints (a table of their own) and progress (in the jobs row).

-- The last progress a running job stored (JSON text: done, total, message) and when.
ALTER TABLE stagecrew_jobs ADD COLUMN progress TEXT;

ALTER TABLE stagecrew_jobs ADD COLUMN progress_at REAL;

-- A job's completed steps (kind 'step', by name) and its checkpoint (kind 'state', name '').
-- Only jobs that store one have rows here; rowid keeps the order they were stored in.
CREATE TABLE IF NOT EXISTS stagecrew_steps (
    job_id    INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    stored_at REAL    NOT NULL,
    UNIQUE (job_id, kind, name)
);

-- Steps go with their job, however it is deleted (prune, purge).
CREATE TRIGGER IF NOT EXISTS stagecrew_steps_of_deleted_jobs
AFTER DELETE ON stagecrew_jobs
BEGIN
    DELETE FROM stagecrew_steps WHERE job_id = OLD.id;
END;
