-- Record the order_at of the latest job of a fairness key in a queue (never moving it back).
INSERT INTO stagecrew_fairness (queue, fairness_key, last_order_at) VALUES (:queue, :key, :last)
ON CONFLICT (queue, fairness_key) DO UPDATE SET last_order_at = max(last_order_at, excluded.last_order_at)
