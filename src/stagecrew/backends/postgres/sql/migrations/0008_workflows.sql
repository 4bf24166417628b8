-- Schema version 8: workflows (chain, group, chord): the workflow record, and each member job's place in it.

-- A member job: its workflow, its step (0 first) and its place in the step; workflow_input is
-- the JSON text of the step before's outcome, set when the member's step is reached (the worker
-- passes it as the first positional argument). All NULL for a job that is no member.
ALTER TABLE {schema}.jobs ADD COLUMN workflow_id text;
ALTER TABLE {schema}.jobs ADD COLUMN workflow_step integer;
ALTER TABLE {schema}.jobs ADD COLUMN workflow_index integer;
ALTER TABLE {schema}.jobs ADD COLUMN workflow_input text;

-- The fan-in probes a step's members by state (workflow_step_probe.sql) and reads them; partial,
-- so jobs that are no member cost it nothing.
CREATE INDEX IF NOT EXISTS jobs_workflow
    ON {schema}.jobs (workflow_id, workflow_step, state)
    WHERE workflow_id IS NOT NULL;

-- One workflow: its status (backends/workflows.py WorkflowStatus), current step, shape (a JSON
-- array of [is a group, size] per step), failure mode, and result once its last step finished.
-- The fan-in locks this row (FOR UPDATE) before it reads the members of the current step.
CREATE TABLE IF NOT EXISTS {schema}.workflows (
    id          text PRIMARY KEY,
    status      text NOT NULL,
    step        integer NOT NULL,
    shape       text NOT NULL,
    on_failure  text NOT NULL,
    created_at  double precision NOT NULL,
    finished_at double precision,
    result      text
);
