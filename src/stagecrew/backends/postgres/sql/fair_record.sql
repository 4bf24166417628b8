-- Record the order_at of the latest job of each fairness key of a batch, per queue (never moving one back).
INSERT INTO {schema}.fairness AS f (queue, fairness_key, last_order_at)
SELECT * FROM unnest(%(queues)b::text[], %(keys)b::text[], %(lasts)b::double precision[])
ON CONFLICT (queue, fairness_key)
DO UPDATE SET last_order_at = greatest(f.last_order_at, excluded.last_order_at)
