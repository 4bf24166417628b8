-- Schema version 8: workflows (chain, group, chord): the workflow record, and each member job's place in it.

-- A member job: its workflow, its step (0 first) and its place in the step; workflow_input is
-- the JSON text of the step before's outcome, set when the member's step is reached (the worker
-- passes it as the first positional argument). All NULL for a job that is no member.
ALTER TABLE stagecrew_jobs ADD COLUMN workflow_id TEXT;
ALTER TABLE stagecrew_jobs ADD COLUMN workflow_step INTEGER;
ALTER TABLE stagecrew_jobs ADD COLUMN workflow_index INTEGER;
ALTER TABLE stagecrew_jobs ADD COLUMN workflow_input TEXT;

-- The fan-in probes a step's members by state (workflow_step_probe.sql) and reads them; partial,
-- so jobs that are no member cost it nothing.
CREATE INDEX IF NOT EXISTS stagecrew_jobs_workflow
    ON stagecrew_jobs (workflow_id, workflow_step, state)
    WHERE workflow_id IS NOT NULL;

-- One workflow: its status (backends/workflows.py WorkflowStatus), current step, shape (a JSON
-- array of [is a group, size] per step), failure mode, and result once its last step finished.
CREATE TABLE IF NOT EXISTS stagecrew_workflows (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    step        INTEGER NOT NULL,
    shape       TEXT NOT NULL,
    on_failure  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    finished_at REAL,
    result      TEXT
) WITHOUT ROWID;
