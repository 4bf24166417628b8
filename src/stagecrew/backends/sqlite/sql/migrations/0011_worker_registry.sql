-- Schema version 11: the worker registry (backends/worker_registry.py): one record per worker process.

-- info: the JSON text the worker wrote of itself (host, pid, queues, slots, version). Times are
-- epoch seconds by this machine's clock: started_at at the first beat, seen_at at the latest,
-- alive_until the latest beat's promise of another; stopped_at once its last beat said it
-- stopped (from then on the row's alive_until and stopped_at never change).
CREATE TABLE IF NOT EXISTS stagecrew_workers (
    id          TEXT PRIMARY KEY,
    info        TEXT NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL,
    alive_until REAL NOT NULL,
    stopped_at  REAL
) WITHOUT ROWID;

-- The pruner finds the long-silent records without reading the others.
CREATE INDEX IF NOT EXISTS stagecrew_workers_seen
    ON stagecrew_workers (seen_at);
