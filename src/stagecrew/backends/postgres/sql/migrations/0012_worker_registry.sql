-- Schema version 12: the worker registry (backends/worker_registry.py): one row per worker process.

-- info: the JSON text the worker wrote of itself (host, pid, queues, slots, version). Times are
-- epoch seconds by the store's clock: started_at at the first beat, seen_at at the latest,
-- alive_until the latest beat's promise of another; stopped_at once its last beat said it
-- stopped (from then on the row's alive_until and stopped_at never change). A few hundred
-- rows at most, each rewritten every few seconds: room on each page for the next version
-- (the seen_at index makes no update HOT) and an early autovacuum keep the table small.
CREATE TABLE {schema}.workers (
    id          text             PRIMARY KEY,
    info        text             NOT NULL,
    started_at  double precision NOT NULL,
    seen_at     double precision NOT NULL,
    alive_until double precision NOT NULL,
    stopped_at  double precision
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 200
);

-- prune_workers: the long-silent records, longest silent first.
CREATE INDEX workers_seen
    ON {schema}.workers (seen_at);
