-- Resume queue :queue: its jobs are claimable again.
DELETE FROM stagecrew_paused_queues WHERE queue = :queue
