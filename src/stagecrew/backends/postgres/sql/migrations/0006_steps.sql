-- Schema version 6: durable steps and checkpoints (a table of their own) and progress (in the jobs row).

-- The last progress a running job stored (JSON text: done, total, message) and when.
ALTER TABLE {schema}.jobs ADD COLUMN progress text;

ALTER TABLE {schema}.jobs ADD COLUMN progress_at double precision;

-- A job's completed steps (kind 'step', by name) and its checkpoint (kind 'state', name '').
-- Only jobs that store one have rows here; seq keeps the order they were stored in. They go
-- with their job, however it is deleted (prune, purge).
CREATE TABLE {schema}.steps (
    job_id    bigint           NOT NULL REFERENCES {schema}.jobs (id) ON DELETE CASCADE,
    kind      text             NOT NULL,
    name      text             NOT NULL,
    value     text             NOT NULL,
    stored_at double precision NOT NULL,
    seq       bigint           GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (job_id, kind, name)
);
