-- Lock a schedule's row for a fire (creating it, with no last tick, the first time) and return its last tick and whether it is paused; the row stays locked until the fire's transaction ends.
INSERT INTO {schema}.schedules AS s (name, queue)
VALUES (%(name)s, %(queue)s)
ON CONFLICT (name) DO UPDATE SET queue = s.queue
RETURNING s.last_tick, s.paused
