-- Schema version 13: the history of finished attempts (backends/job_counts.py): counts per minute, queue, task and outcome.

-- bucket: the minute's start (epoch seconds by the store's clock, a multiple of 60). Workers
-- add to the current minute's rows every few seconds (add_counts: one upsert of all of a
-- worker's keys, in key order, so two adds never wait on each other in opposite orders); the
-- pruner deletes minutes past keeping. Each add rewrites a row with no indexed column
-- changed, so the updates are HOT: room on each page for the next version.
CREATE TABLE {schema}.job_counts (
    bucket  double precision NOT NULL,
    queue   text             NOT NULL,
    task    text             NOT NULL,
    outcome text             NOT NULL,
    n       bigint           NOT NULL,
    PRIMARY KEY (bucket, queue, task, outcome)
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000
);
