-- What a keyed enqueue orders its jobs by: the store clock, each (queue, priority)'s due head, each (queue, key)'s latest order_at.
-- Rows: ('now', ..., now); ('head', queue, priority, NULL, order_at of the head or NULL);
-- ('last', queue, NULL, key, last_order_at) for each key already recorded.
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
)
SELECT 'now', NULL::text, NULL::integer, NULL::text, clock.now FROM clock
UNION ALL
SELECT 'head', wanted.queue, wanted.priority, NULL, (
    SELECT j.order_at
    FROM {schema}.jobs AS j
    WHERE j.state IN ('available', 'scheduled')
      AND j.queue = wanted.queue
      AND j.priority = wanted.priority
      AND j.run_at <= clock.now
    ORDER BY j.priority, j.order_at, j.id
    LIMIT 1
)
FROM unnest(%(head_queues)b::text[], %(head_priorities)b::integer[]) AS wanted (queue, priority)
CROSS JOIN clock
UNION ALL
SELECT 'last', f.queue, NULL, f.fairness_key, f.last_order_at
FROM unnest(%(key_queues)b::text[], %(keys)b::text[]) AS wanted (queue, fairness_key)
JOIN {schema}.fairness AS f USING (queue, fairness_key)
