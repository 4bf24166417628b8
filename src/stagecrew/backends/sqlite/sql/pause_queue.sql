-- Pause queue :queue (a paused queue's claims take nothing); a queue already paused stays as it was.
INSERT INTO stagecrew_paused_queues (queue, paused_at) VALUES (:queue, :now)
ON CONFLICT (queue) DO NOTHING
