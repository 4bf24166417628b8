-- Store a worker's beat: insert its record, or update it keeping started_at; a stopped record keeps its stopped_at and alive_until (a late beat does not revive it). :alive_until and :stopped_at are those of this beat (stopped: now, now).
INSERT INTO stagecrew_workers (id, info, started_at, seen_at, alive_until, stopped_at)
VALUES (:id, :info, :now, :now, :alive_until, :stopped_at)
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info,
    seen_at = excluded.seen_at,
    alive_until = CASE
        WHEN stagecrew_workers.stopped_at IS NULL THEN excluded.alive_until
        ELSE stagecrew_workers.alive_until
    END,
    stopped_at = coalesce(stagecrew_workers.stopped_at, excluded.stopped_at)
