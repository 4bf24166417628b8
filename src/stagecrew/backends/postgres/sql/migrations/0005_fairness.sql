-- Schema version 5: fair queues (order_at, fairness keys, the fairness table) and the starvation guard (original_priority).

-- Claims take due jobs in (priority, order_at, id) order. order_at is run_at for a job without
-- a fairness key (first in, first out, as before) and the job's place in its queue's fair
-- order for a keyed one (backends/fairness.py); every job that waits again (retry, hand-back,
-- rescue, re-run) is ordered by its run_at again. Existing jobs keep their order (order_at =
-- run_at): the UPDATE rewrites every row once, so upgrade a large table at a quiet time. The
-- default 0 is for a row an older stagecrew still writes during a rolling upgrade: its job is
-- claimed first of its priority once due, instead of its enqueue failing.
ALTER TABLE {schema}.jobs ADD COLUMN order_at double precision NOT NULL DEFAULT 0;

ALTER TABLE {schema}.jobs ADD COLUMN fairness_key text;

-- The priority a job was enqueued with, once the aging pass improved its priority (else NULL).
ALTER TABLE {schema}.jobs ADD COLUMN original_priority integer;

UPDATE {schema}.jobs SET order_at = run_at;

-- fetch: per queue, waiting jobs in claim order (replaces the run_at ordered index). run_at comes
-- last, after the unique id, so it never changes the order: it lets a claim test due-ness in the
-- index (an index condition, as with the old index), which keeps the planner on an ordered scan
-- of the queue's head even with the stale statistics a queue table always has; without it a
-- flood enqueued during a drain could turn every claim into a sort of all the waiting jobs.
DROP INDEX {schema}.jobs_claim;

CREATE INDEX jobs_claim
    ON {schema}.jobs (queue, priority, order_at, id, run_at)
    WHERE state IN ('available', 'scheduled');

-- Per queue and fairness key, the order_at given to the key's latest job; the pruner forgets
-- keys idle for a day (fairness.STALE_AFTER).
CREATE TABLE {schema}.fairness (
    queue         text             NOT NULL,
    fairness_key  text             NOT NULL,
    last_order_at double precision NOT NULL,
    PRIMARY KEY (queue, fairness_key)
);
