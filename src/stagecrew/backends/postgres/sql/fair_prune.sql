-- Forget the fairness keys that enqueued nothing for %(stale_seconds)s seconds (they start from the head again).
DELETE FROM {schema}.fairness
WHERE last_order_at < {schema}.store_now(%(now)s) - %(stale_seconds)s
