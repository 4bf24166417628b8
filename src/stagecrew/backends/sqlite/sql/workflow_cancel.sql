-- Cancel workflow ?2 at ?1 unless it succeeded or was cancelled already; it never advances again.
UPDATE stagecrew_workflows SET status = 'cancelled', finished_at = ?1
WHERE id = ?2 AND status IN ('running', 'failed')
