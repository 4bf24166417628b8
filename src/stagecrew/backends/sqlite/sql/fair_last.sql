-- The order_at given to the latest job of fairness key :key in queue :queue.
SELECT last_order_at FROM stagecrew_fairness WHERE queue = :queue AND fairness_key = :key
