-- Forget the fairness keys that enqueued nothing since :stale_before (they start from the head again).
DELETE FROM stagecrew_fairness WHERE last_order_at < :stale_before
