-- Schema version 1: the jobs table, and the indexes behind claim, rescue, dedupe, stats, list and prune.

-- AUTOINCREMENT: an id is never reused, so a stale worker's (id, attempt) fence can never
-- match a newer job that happens to get the id of a purged one.
CREATE TABLE IF NOT EXISTS stagecrew_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    task             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (
                         state IN ('scheduled', 'available', 'running', 'succeeded', 'dead', 'cancelled')
                     ),
    payload          TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL    NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    enqueued_at      REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    idempotency_key  TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lost             INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    errors           TEXT    NOT NULL DEFAULT '[]'  -- JSON array of AttemptError.to_json()
);

-- fetch: per queue, waiting jobs in claim order. Queries must repeat this WHERE text exactly.
CREATE INDEX IF NOT EXISTS stagecrew_jobs_claim
    ON stagecrew_jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled');

-- rescue: running jobs by lease expiry.
CREATE INDEX IF NOT EXISTS stagecrew_jobs_lease
    ON stagecrew_jobs (lease_expires_at)
    WHERE state = 'running';

-- enqueue: one stored job per idempotency key.
CREATE UNIQUE INDEX IF NOT EXISTS stagecrew_jobs_idempotency_key
    ON stagecrew_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- stats (a covering scan) and list_jobs by state, or by state and queue (then in id order).
CREATE INDEX IF NOT EXISTS stagecrew_jobs_state_queue
    ON stagecrew_jobs (state, queue);

-- prune: finished jobs of one state, oldest first.
CREATE INDEX IF NOT EXISTS stagecrew_jobs_finished
    ON stagecrew_jobs (state, finished_at)
    WHERE finished_at IS NOT NULL;
