-- Every worker record by id (code point order, as every engine sorts) and the store's now, which the first column of every row holds (one row with a NULL id when there is none).
SELECT n.now, w.id, w.info, w.started_at, w.seen_at, w.alive_until, w.stopped_at
FROM (SELECT {schema}.store_now(%(now)s) AS now) AS n
LEFT JOIN {schema}.workers AS w ON true
ORDER BY w.id COLLATE "C"
