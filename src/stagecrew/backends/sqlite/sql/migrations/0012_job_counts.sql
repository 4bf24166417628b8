-- Schema version 12: the history of finished attempts (backends/job_counts.py): counts per minute, queue, task and outcome.

-- bucket: the minute's start (epoch seconds, this machine's clock, a multiple of 60). Workers
-- add to the current minute's rows every few seconds; the pruner deletes minutes past keeping.
CREATE TABLE IF NOT EXISTS stagecrew_job_counts (
    bucket  REAL    NOT NULL,
    queue   TEXT    NOT NULL,
    task    TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (bucket, queue, task, outcome)
) WITHOUT ROWID;
