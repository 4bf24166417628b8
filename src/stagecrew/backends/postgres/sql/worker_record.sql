-- Store a worker's beat: insert its record, or update it keeping started_at; a stopped record keeps its stopped_at and alive_until (a late beat does not revive it).
WITH n AS (SELECT {schema}.store_now(%(now)s) AS now)
INSERT INTO {schema}.workers AS w (id, info, started_at, seen_at, alive_until, stopped_at)
SELECT %(id)s, %(info)s, n.now, n.now,
       CASE WHEN %(stopped)s THEN n.now ELSE n.now + %(ttl)s END,
       CASE WHEN %(stopped)s THEN n.now END
FROM n
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info,
    seen_at = excluded.seen_at,
    alive_until = CASE WHEN w.stopped_at IS NULL THEN excluded.alive_until ELSE w.alive_until END,
    stopped_at = coalesce(w.stopped_at, excluded.stopped_at)
