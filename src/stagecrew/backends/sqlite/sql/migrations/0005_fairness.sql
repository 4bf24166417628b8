-- Schema version 5: fair queues (order_at, fairness keys) and the starvation guard (original_priority).

-- Claims take due jobs in (priority, order_at, id) order. order_at is run_at for a job without
-- a fairness key (first in, first out, as before) and the job's place in its queue's fair
-- order for a keyed one (backends/fairness.py); every job that waits again (retry, hand-back,
-- rescue, re-run) is ordered by its run_at again. Existing jobs keep their order: order_at = run_at.
-- The default 0 is for a row an older stagecrew still writes during a rolling upgrade: its job
-- is claimed first of its priority once due, instead of its enqueue failing.
ALTER TABLE stagecrew_jobs ADD COLUMN order_at REAL NOT NULL DEFAULT 0;

ALTER TABLE stagecrew_jobs ADD COLUMN fairness_key TEXT;

-- The priority a job was enqueued with, once the aging pass improved its priority (else NULL).
ALTER TABLE stagecrew_jobs ADD COLUMN original_priority INTEGER;

UPDATE stagecrew_jobs SET order_at = run_at;

-- fetch: per queue, waiting jobs in claim order. Queries must repeat this WHERE text exactly.
DROP INDEX IF EXISTS stagecrew_jobs_claim;

CREATE INDEX IF NOT EXISTS stagecrew_jobs_claim
    ON stagecrew_jobs (queue, priority, order_at, id)
    WHERE state IN ('available', 'scheduled');

-- Per queue and fairness key, the order_at given to the key's latest job; the pruner forgets
-- keys idle for a day (fairness.STALE_AFTER).
CREATE TABLE IF NOT EXISTS stagecrew_fairness (
    queue         TEXT NOT NULL,
    fairness_key  TEXT NOT NULL,
    last_order_at REAL NOT NULL,
    PRIMARY KEY (queue, fairness_key)
) WITHOUT ROWID;
