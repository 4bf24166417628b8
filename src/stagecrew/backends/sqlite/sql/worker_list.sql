-- Every worker record, by id, in the order _worker_from_row reads them.
SELECT id, info, started_at, seen_at, alive_until, stopped_at
FROM stagecrew_workers
ORDER BY id
