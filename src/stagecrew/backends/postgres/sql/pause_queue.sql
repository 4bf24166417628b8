-- Pause queue %(queue)s: claims take none of its jobs; returns a row only if it was not paused.
INSERT INTO {schema}.paused_queues (queue, paused_at)
VALUES (%(queue)s, {schema}.store_now(%(now)s))
ON CONFLICT (queue) DO NOTHING
RETURNING queue
